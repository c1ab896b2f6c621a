"""Operations on the stored records that the admin CLI (db_manager.py) runs: export, counts, log cleanup, reset."""
