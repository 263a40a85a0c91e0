//! The CLIP BPE tokenizer of Stable-Diffusion-family pipelines (`tokenizer/` of a pipeline
//! folder), through Hugging Face's `tokenizers` crate: `tokenizer.json` when the folder has one,
//! else `vocab.json` + `merges.txt` (how SD 1.x/2.x checkpoints ship it) assembled into the same
//! pipeline transformers' `CLIPTokenizerFast` converts them to (NFC, whitespace runs to one
//! space, lowercase; CLIP's word regex; byte-level alphabet; BPE with `</w>` word ends).
//!
//! Ids are made as `StableDiffusionPipeline` makes them: `tokenizer(prompt,
//! padding="max_length", max_length=model_max_length, truncation=True)`: bos, the prompt's
//! tokens, eos, then the pad token up to `model_max_length` (77). A longer prompt is truncated
//! to `model_max_length - 2` tokens, as diffusers does, and [`Encoded::truncated`] says so (the
//! caller warns, naming the dropped text).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::path::Path;
use tokenizers::Tokenizer;

/// CLIP's pre-tokenizer regex (openai/CLIP `simple_tokenizer.py`, as in `tokenizer.json`).
const CLIP_WORD_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    inner: Tokenizer,
    bos: i64,
    eos: i64,
    pad: i64,
    /// ids per prompt, special tokens included (`model_max_length`)
    pub max_len: usize,
    /// which files it was read from, for messages and manifests
    pub source: &'static str,
}

/// One prompt's ids, padded to the tokenizer's length.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    /// the prompt had more than `max_len - 2` tokens; the rest was dropped
    pub truncated: bool,
}

/// `tokenizer_config.json`'s fields that matter here, with CLIP's defaults.
struct TokenizerConfig {
    bos: String,
    eos: String,
    pad: String,
    max_len: usize,
}

fn token_field(map: &Map<String, Value>, key: &str, default: &str) -> Result<String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        // older configs write AddedToken objects: {"content": "...", ...}
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => bail!("tokenizer_config.json: `{key}` has no string `content`"),
        },
        Some(v) => bail!("tokenizer_config.json: `{key}` = {v} is not a token"),
    }
}

fn read_config(dir: &Path) -> Result<TokenizerConfig> {
    let path = dir.join("tokenizer_config.json");
    let map = if path.exists() {
        crate::diffusers::read_object(&path).map_err(|e| anyhow!(e))?
    } else {
        Map::new()
    };
    let eos = token_field(&map, "eos_token", "<|endoftext|>")?;
    let max_len = match map.get("model_max_length") {
        None | Some(Value::Null) => 77,
        Some(v) => match v.as_u64() {
            Some(n @ 3..=4096) => n as usize,
            _ => bail!(
                "{}: model_max_length = {v} is not a length in 3..4096",
                path.display()
            ),
        },
    };
    Ok(TokenizerConfig {
        bos: token_field(&map, "bos_token", "<|startoftext|>")?,
        pad: token_field(&map, "pad_token", &eos)?,
        eos,
        max_len,
    })
}

impl ClipTokenizer {
    /// A pipeline's `tokenizer/` folder: `tokenizer.json` if present, else `vocab.json` +
    /// `merges.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg = read_config(dir)?;
        let json_path = dir.join("tokenizer.json");
        if json_path.exists() {
            let inner = Tokenizer::from_file(&json_path)
                .map_err(|e| anyhow!("{}: not a tokenizer file: {e}", json_path.display()))?;
            return Self::new(inner, cfg, "tokenizer.json");
        }
        Self::from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt"), dir)
    }

    /// `vocab.json` + `merges.txt` (and `tokenizer_config.json` in `config_dir`, if any).
    pub fn from_vocab_merges(vocab: &Path, merges: &Path, config_dir: &Path) -> Result<Self> {
        let cfg = read_config(config_dir)?;
        let vocab_map = crate::diffusers::read_object(vocab).map_err(|e| anyhow!(e))?;
        let merges_text = std::fs::read_to_string(merges)
            .with_context(|| format!("{}: cannot read the BPE merges", merges.display()))?;
        let merges_list: Vec<Value> = merges_text
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(|l| {
                let mut parts = l.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Ok(json!([a, b])),
                    _ => Err(anyhow!(
                        "{}: merge line `{l}` is not two tokens",
                        merges.display()
                    )),
                }
            })
            .collect::<Result<_>>()?;
        let added: Vec<Value> = [&cfg.bos, &cfg.eos]
            .iter()
            .map(|tok| -> Result<Value> {
                let id = vocab_map
                    .get(tok.as_str())
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| anyhow!("{}: no id for `{tok}`", vocab.display()))?;
                Ok(
                    json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}),
                )
            })
            .collect::<Result<_>>()?;
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": CLIP_WORD_REGEX}, "behavior": "Removed",
                 "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                 "use_regex": true}]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                        "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": cfg.eos,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": Value::Object(vocab_map), "merges": merges_list},
        });
        let inner: Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| anyhow!("{} + {}: {e}", vocab.display(), merges.display()))?;
        Self::new(inner, cfg, "vocab.json + merges.txt")
    }

    fn new(inner: Tokenizer, cfg: TokenizerConfig, source: &'static str) -> Result<Self> {
        let id = |tok: &str| -> Result<i64> {
            inner
                .token_to_id(tok)
                .map(i64::from)
                .ok_or_else(|| anyhow!("tokenizer ({source}): no id for `{tok}`"))
        };
        Ok(Self {
            bos: id(&cfg.bos)?,
            eos: id(&cfg.eos)?,
            pad: id(&cfg.pad)?,
            max_len: cfg.max_len,
            source,
            inner,
        })
    }

    /// The ids of the vocabulary's size (for checking a text encoder against it).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// bos, the prompt's tokens (at most `max_len - 2`), eos, pad to `max_len`.
    pub fn encode(&self, prompt: &str) -> Result<Encoded> {
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| anyhow!("tokenizer: cannot encode {prompt:?}: {e}"))?;
        let body = enc.get_ids();
        let keep = self.max_len - 2;
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos);
        ids.extend(body.iter().take(keep).map(|&i| i64::from(i)));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Ok(Encoded {
            ids,
            truncated: body.len() > keep,
        })
    }
}
