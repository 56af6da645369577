"""own writes, the ticket activity a delivery saw, one pending write-back per rating

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 06:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'own_writes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('connection_id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.String(length=100), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('activity_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], name=op.f('fk_own_writes_connection_id_connections')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_own_writes')),
        sa.UniqueConstraint('connection_id', 'ticket_id', name=op.f('uq_own_writes_connection_id_ticket_id')),
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ticket_updated_at', sa.DateTime(timezone=True), nullable=True))
    # Older hubs could leave two pending write-backs for one rating: keep the newest.
    op.execute(
        "UPDATE write_backs SET state = 'superseded', last_error = 'Replaced by a newer write-back.' "
        "WHERE state = 'pending' AND id NOT IN "
        "(SELECT max(id) FROM write_backs WHERE state = 'pending' GROUP BY rating_id)"
    )
    with op.batch_alter_table('write_backs', schema=None) as batch_op:
        batch_op.create_index(
            'uq_write_backs_pending_rating_id', ['rating_id'], unique=True,
            sqlite_where=sa.text("state = 'pending'"), postgresql_where=sa.text("state = 'pending'"),
        )


def downgrade():
    with op.batch_alter_table('write_backs', schema=None) as batch_op:
        batch_op.drop_index('uq_write_backs_pending_rating_id')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('ticket_updated_at')
    op.drop_table('own_writes')
