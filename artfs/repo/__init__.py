"""Store operations with no transactions in their signatures: put, get, alias, delete, diff, du, verify."""
