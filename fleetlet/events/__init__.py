"""The event stream: every change in the cluster as one indexed event, buffered for resumption and fanned out."""
