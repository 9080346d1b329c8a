from batch_emulator.server import main

raise SystemExit(main())
