"""erasing a person: suppressions kept as keyed hashes, the hub's own keys, an audit
log, and the helpdesk clean-ups an erasure still owes

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 12:00:00.000000

Existing suppressions are converted to HMAC-SHA256 hashes of their normal form under a
random key made here and stored encrypted with HUB_SECRET_KEY (as `hub.suppressions`
does). A downgrade cannot turn hashes back into addresses: it keeps each row with its
hash in `email`, which matches no address, so those people are no longer suppressed.
"""
import base64
import hashlib
import hmac
import logging
import secrets
from datetime import datetime
from datetime import timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _normal_form(email):
    # `hub.addresses.email_key` as of this revision (migrations do not import hub code
    # that may change later).
    from email_validator import EmailNotValidError
    from email_validator import validate_email

    try:
        checked = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError:
        return email.strip().lower()
    return (checked.ascii_email or checked.normalized).lower()


def upgrade():
    op.create_table(
        'hub_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=50), nullable=False),
        sa.Column('secret_encrypted', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_hub_keys')),
        sa.UniqueConstraint('name', name=op.f('uq_hub_keys_name')),
    )
    op.create_table(
        'audit_entries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor_user_id', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=50), nullable=False),
        sa.Column('details', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ['actor_user_id'], ['users.id'], name=op.f('fk_audit_entries_actor_user_id_users')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entries')),
    )
    op.create_index(
        'ix_audit_entries_action_created_at', 'audit_entries', ['action', 'created_at']
    )
    op.create_table(
        'helpdesk_erasures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('audit_entry_id', sa.Integer(), nullable=False),
        sa.Column('connection_id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.String(length=100), nullable=False),
        sa.Column('attribute_names', sa.JSON(), nullable=False),
        sa.Column('note_ids', sa.JSON(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ['audit_entry_id'], ['audit_entries.id'],
            name=op.f('fk_helpdesk_erasures_audit_entry_id_audit_entries'),
        ),
        sa.ForeignKeyConstraint(
            ['connection_id'], ['connections.id'],
            name=op.f('fk_helpdesk_erasures_connection_id_connections'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_helpdesk_erasures')),
    )
    op.create_index(
        'ix_helpdesk_erasures_audit_entry_id', 'helpdesk_erasures', ['audit_entry_id']
    )
    op.create_index(
        'ix_helpdesk_erasures_next_attempt_at', 'helpdesk_erasures', ['next_attempt_at']
    )

    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_hash', sa.String(length=64), nullable=True))
    _hash_existing_suppressions()
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_constraint('uq_suppressions_email', type_='unique')
        batch_op.drop_column('email')
        batch_op.alter_column('email_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(op.f('uq_suppressions_email_hash'), ['email_hash'])


def _hash_existing_suppressions():
    if op.get_context().as_sql:
        return  # offline SQL: there are no rows to see (and no key to make)
    connection = op.get_bind()
    rows = connection.execute(sa.text('SELECT id, email FROM suppressions')).fetchall()
    if not rows:
        return  # the hub makes the key on first use
    from flask import current_app

    raw = secrets.token_bytes(32)
    vault = current_app.extensions['hub'].vault
    connection.execute(
        sa.text(
            'INSERT INTO hub_keys (name, secret_encrypted, created_at) '
            'VALUES (:name, :secret, :now)'
        ),
        {
            'name': 'suppressions',
            'secret': vault.encrypt({'key': base64.b64encode(raw).decode()}),
            'now': datetime.now(timezone.utc),
        },
    )
    seen = set()
    for row_id, email in rows:
        digest = hmac.new(raw, _normal_form(email).encode(), hashlib.sha256).hexdigest()
        if digest in seen:  # two spellings of one address: one entry is enough
            connection.execute(sa.text('DELETE FROM suppressions WHERE id = :id'), {'id': row_id})
            continue
        seen.add(digest)
        connection.execute(
            sa.text('UPDATE suppressions SET email_hash = :digest WHERE id = :id'),
            {'digest': digest, 'id': row_id},
        )


def downgrade():
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email', sa.String(length=320), nullable=True))
    if not op.get_context().as_sql:
        connection = op.get_bind()
        kept = connection.execute(
            sa.text('UPDATE suppressions SET email = email_hash')
        ).rowcount
        if kept:
            logging.getLogger('alembic.runtime.migration').warning(
                '%s suppressions were kept as hashes: they match no address any more.', kept
            )
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_constraint('uq_suppressions_email_hash', type_='unique')
        batch_op.drop_column('email_hash')
        batch_op.alter_column('email', existing_type=sa.String(length=320), nullable=False)
        batch_op.create_unique_constraint(op.f('uq_suppressions_email'), ['email'])
    op.drop_index('ix_helpdesk_erasures_next_attempt_at', table_name='helpdesk_erasures')
    op.drop_index('ix_helpdesk_erasures_audit_entry_id', table_name='helpdesk_erasures')
    op.drop_table('helpdesk_erasures')
    op.drop_index('ix_audit_entries_action_created_at', table_name='audit_entries')
    op.drop_table('audit_entries')
    op.drop_table('hub_keys')
