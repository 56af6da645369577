"""session versions and milestones

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 06:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))
    op.create_table(
        'milestones',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=50), nullable=False),
        sa.Column('reached_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_milestones')),
        sa.UniqueConstraint('key', name=op.f('uq_milestones_key')),
    )
    # A hub that already has an admin has passed the first-admin step.
    op.execute(
        "INSERT INTO milestones (key, reached_at) SELECT 'first-admin', CURRENT_TIMESTAMP "
        "WHERE EXISTS (SELECT 1 FROM users WHERE role = 'admin')"
    )


def downgrade():
    op.drop_table('milestones')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_version')
