"""The compiled graph that langgraph.json names (`./graph/graph.py:graph`) for `langgraph dev`."""

from fusiongraph.graph.builder import graph

__all__ = ["graph"]
