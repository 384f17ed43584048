"""Pure functions and single jobs in one process: fast, no servers, no training of minutes."""
