"""The trigger pipeline shared by every metric: scan → decide → send → capture → write back.

The database is the source of truth: every step reads and writes rows, and Redis only
carries jobs, so the reconciler can always re-derive outstanding work from the database.
"""
