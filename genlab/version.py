"""genlab's version, in a module of its own so that the bottom layers can read it without importing the
package's facade (genlab.load_pipeline)."""

__version__ = "0.1.0"
