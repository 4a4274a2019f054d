from interlink_htcondor.cli import main

# Guarded: worker processes (service.worker_pool) import the main module under another name.
if __name__ == "__main__":
    raise SystemExit(main())
