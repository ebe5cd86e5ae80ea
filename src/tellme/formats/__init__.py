"""The files models come in. Each reader (hf.HFCheckpoint, gguf_model.GGUFCheckpoint) gives the
same interface, whatever the stored form:

    config                      ModelConfig
    tokenizer                   Tokenizer or None
    linear(layer, name)         (ternary int8 [out, in], scale) with W = scale * T, Hugging Face row order;
                                scale is one number, or float32 [out, in / group] (a scale per group)
    norm(layer, name)           float32 gamma of each name in config.norm_names() (Hugging Face order)
    embedding(), final_norm()   float32
    lm_head()                   float32, or None when tied to the embedding
    table_rows(table, a, b)     rows [a, b) of "embedding" or "lm_head": float32, or fp16 bits as
                                uint16 (loading streams the tables through bounded memory; a
                                reader without it is packed from embedding()/lm_head())
    packed_linear(layer, name)  optional (GGUF): (TernaryWeights in the i2 layout, how), or None

gguf_export writes any reader as GGUF; the engine's own packed file is tellme/packed.py.
"""
