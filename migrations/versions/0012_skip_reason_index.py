"""an index for counting skipped deliveries by reason (/metrics, the funnel)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 13:20:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        'ix_deliveries_state_skip_reason', 'deliveries', ['state', 'skip_reason'], unique=False
    )


def downgrade():
    op.drop_index('ix_deliveries_state_skip_reason', table_name='deliveries')
