"""What every stage shares, and nothing stage-specific: a stage package may import these, they
import no stage. One concern per module:

    cli             command lines: the parser, argument types, one-line errors, name=value results
    files           atomic writes (temp + rename), JSON, locks, the work dir check
    paths           the one map of the work dir
    serving_config  TF Serving's model config files: which versions each track of servers serves
    cpus            CPUs, memory and threads a job may use
    lifecycle       children that end when their parent does
    png             images encoded as clients send them
    tf_errors       a TensorFlow error in one line
    noise           TensorFlow's start-up lines kept from a person: in a log only
"""
