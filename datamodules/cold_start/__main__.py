from datamodules.cold_start.pipeline import main

main()
