"""delivery opened time, user invitation time

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_deliveries_survey_created_at', ['survey_id', 'created_at'])
        batch_op.create_index('ix_deliveries_agent_ref_id', ['agent_ref', 'id'])
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('invited_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('invited_at')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_agent_ref_id')
        batch_op.drop_index('ix_deliveries_survey_created_at')
        batch_op.drop_column('opened_at')
