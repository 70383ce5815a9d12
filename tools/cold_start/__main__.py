from tools.cold_start.pipeline import main

raise SystemExit(main())
