"""The circuit engine: the computational graph of a transformer, edge scores (EAP,
EAP-IG, exact), circuit-ablated forwards, faithfulness curves and the MIB format.

It depends on torch and a small interface only: a TransformerBridge in compatibility
mode, clean and corrupted token tensors of one length, and a metric callable on the
final position's unembedding input. `mi_dsl.analyses.circuit` turns it into a spec
analysis.
"""
