"""The topn flow and the `topn` command."""
