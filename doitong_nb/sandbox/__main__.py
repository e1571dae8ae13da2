"""`python -m doitong_nb.sandbox`, kept for users: the same program as `python -m doitong_sandbox`."""

from doitong_sandbox.__main__ import main

if __name__ == "__main__":
    main()
