"""Tiny random models of every upload family, built from transformers configs and saved as an upload folder
(safetensors + config + tokenizer files): the fixtures of the family, upload, table and page tests."""
import zipfile
from pathlib import Path

import torch

TINY = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)



def _tokenizers(texts):
    """(WordPiece, byte-level BPE) trained in about a second on our own text: nothing is downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=1000, show_progress=False, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(  # <pad> = 1: RoBERTa's padding_idx
        vocab_size=1000, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"]))
    return wp, bpe


def _llama_family():
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)
    return {"llama": (LlamaForCausalLM, LlamaConfig, {"tie_word_embeddings": True}),
            "qwen2": (Qwen2ForCausalLM, Qwen2Config, {"tie_word_embeddings": False}),
            "mistral": (MistralForCausalLM, MistralConfig, {"sliding_window": 4, "tie_word_embeddings": False})}


LLAMA_FAMILY = _llama_family()


def build_family(family: str, out: Path, tokenizers=None, seed=0):
    """Save a random tiny model of a family (and its tokenizer) to out; returns the in-memory model."""
    from transformers import (BertConfig, BertModel, BertTokenizerFast, DistilBertConfig, DistilBertModel,
                              GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, RobertaConfig, RobertaModel,
                              RobertaTokenizerFast)
    torch.manual_seed(seed)
    wp, bpe = tokenizers or (None, None)
    if family == "bert":
        model, tok = BertModel(BertConfig(**TINY)), wp and BertTokenizerFast(
            tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]")
    elif family == "distilbert":
        model, tok = DistilBertModel(DistilBertConfig(vocab_size=1000, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                      max_position_embeddings=64)), wp and BertTokenizerFast(
            tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]")
    elif family == "roberta":
        model, tok = RobertaModel(RobertaConfig(**{**TINY, "max_position_embeddings": 66}), add_pooling_layer=False), \
            bpe and RobertaTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                         unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    elif family == "gpt2":
        model, tok = GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                bos_token_id=5, eos_token_id=5)), \
            bpe and GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                      unk_token="<|endoftext|>")
    elif family in LLAMA_FAMILY:  # grouped-query attention (2 heads a k/v head); Llama tied like SmolLM's, Qwen2 with
        # q/k/v biases, Mistral with a sliding window shorter than the test sequences; GPT-2's byte-level BPE
        cls, cfg_cls, extra = LLAMA_FAMILY[family]
        model = cls(cfg_cls(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                            bos_token_id=5, eos_token_id=5, **extra))
        tok = bpe and GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    elif family in ("mpnet", "modernbert"):
        from encoder_models import tiny_encoder
        model, tok = tiny_encoder(family, bpe)
    else:
        raise ValueError(f"no tiny {family} model to test: add its config and tokenizer to build_family")
    perturb(model, 0.05)
    model.eval().save_pretrained(out)  # safetensors by default
    (out / "generation_config.json").unlink(missing_ok=True)
    if tok is not None:
        tok.save_pretrained(out)
    return model


def perturb(model, scale: float):
    """Random init leaves biases zero and some weights tiny: add noise to every parameter so that every head, neuron
    and bias really changes the outputs (the equivalence tests would pass on zeros)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def zip_dir(d: Path, dest: Path, folder: str = "") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(d.iterdir()):
            z.write(f, folder + f.name)
    return dest
