from embedserve.server.cli import main

main()
