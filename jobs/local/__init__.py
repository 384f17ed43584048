"""The pipeline on one machine: the cluster's steps as local processes.
One concern per module:

    runner     the steps in order, training workers restarted like a TFJob's, the model
               servers, Ctrl-C
    settings   its flags (the defaults `make local` leaves in force) and the checked settings
    processes  process groups: start, wait, stop together; a local model server's command
    summary    the end of a run: the table, results.txt, timings.json
    status     `python -m jobs.status`: one screen of the runs and the served version
    __main__   `python -m jobs.local`
"""
