"""the ticket's page in the helpdesk, recorded with each delivery

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 12:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('deliveries') as batch_op:
        batch_op.add_column(sa.Column('ticket_url', sa.String(length=500), nullable=True))


def downgrade():
    with op.batch_alter_table('deliveries') as batch_op:
        batch_op.drop_column('ticket_url')
