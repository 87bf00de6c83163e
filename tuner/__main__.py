from tuner.cli.commands import main

main()
