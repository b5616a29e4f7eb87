"""One thin module per `mrfnet <command>`: its parser and a run() that calls one stage's library code."""
