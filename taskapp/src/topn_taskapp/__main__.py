from topn_taskapp.cli import main

raise SystemExit(main())
