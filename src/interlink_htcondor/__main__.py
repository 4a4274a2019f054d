from interlink_htcondor.cli import main

raise SystemExit(main())
