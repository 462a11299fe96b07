"""Tiny random MPNet and ModernBERT models (and their tokenizers) for the tests: test_families.build_family builds
them through here, at its width; the table's fixtures (conftest) at hidden 64."""
import torch


def tiny_encoder(family: str, bpe=None, hidden: int = 32, heads: int = 4, vocab: int = 1000):
    """(model, tokenizer or None): 2 blocks, FFN 2 x hidden. The byte-level BPE's specials (<s> 0, <pad> 1, </s> 2,
    <unk> 3, <mask> 4) are MPNet's own layout (its positions start after the padding id 1); ModernBERT gets the
    same ids in its config. ModernBERT: block 0 global, block 1 local with a 4-token window (shorter than the
    tests' sequences, so the two kinds really differ)."""
    from transformers import MPNetConfig, MPNetModel, ModernBertConfig, ModernBertModel, PreTrainedTokenizerFast
    ids = dict(bos_token_id=0, pad_token_id=1, eos_token_id=2)
    size = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
                intermediate_size=2 * hidden, max_position_embeddings=128)
    if family == "mpnet":
        model = MPNetModel(MPNetConfig(**size, **ids), add_pooling_layer=False)
    elif family == "modernbert":
        model = ModernBertModel(ModernBertConfig(**size, **ids, cls_token_id=0, sep_token_id=2,
                                                 global_attn_every_n_layers=2, local_attention=4))
    else:
        raise ValueError(f"no tiny {family} model here")
    tok = bpe and PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                          unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    return model, tok


def perturbed(model, seed: int = 0):
    """Random init leaves biases zero and norms one: perturb every weight so that every head and neuron matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()
