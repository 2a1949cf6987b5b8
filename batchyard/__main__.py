from batchyard.cli import main

main()
