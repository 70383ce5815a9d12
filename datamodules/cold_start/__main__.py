from datamodules.cold_start.pipeline import main

raise SystemExit(main())
