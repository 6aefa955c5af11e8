"""One thin module per verb: parse options, build the runtime, call the library, print or write."""
