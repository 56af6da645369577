"""erasing a person (placeholder: filled in by the erasure change)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 12:00:00.000000

"""

# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
