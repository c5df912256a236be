"""`embedserve embed`: a corpus embedded in-process, through the server's own batcher, into a file."""
