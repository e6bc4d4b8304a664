from granary.cli.main import main

main()
