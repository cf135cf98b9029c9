//! Data preparation: text -> `mixlab_token_shard_v1` shards, the tokenizer, a dataset manifest and the
//! bits-per-byte lookup tables.
//!
//! * Input: a `.txt` file, a `.jsonl` file (documents in `--text-field`), or a folder (every `*.txt`,
//!   then every `*.jsonl`, recursively, sorted). Documents are concatenated with no separator (mixlab).
//!   Input is streamed in chunks of about 1 MiB (cut after a newline), so a corpus larger than memory
//!   works; with BPE, a chunk boundary can split a whitespace run differently than one pass would.
//! * Tokenizer: bytes (vocab 256), a byte-level BPE trained with the `tokenizers` crate (mixlab §7.4:
//!   ByteLevel pre-tokenizer without prefix space, special token `<|pad|>` = id 0), or a reused
//!   `tokenizer.json`. Encoding runs on all cores (`encode_batch`). Vocabularies over 65,535 are refused
//!   (shards hold uint16 ids).
//! * Split: the last `val_split` of the token stream is validation (`n_val = max(1, n·split)`).
//! * Output: `train_XXXXX.bin`, `val_XXXXX.bin`, `tokenizer.json` (BPE), `mixlab.dataset.json`,
//!   `bytes_per_token.bin` (uint16 LE per id), `has_leading_space.bin` and `is_boundary_token.bin` (one
//!   byte per id). Everything is written into a hidden staging folder inside `--output` and moved into
//!   place only when complete; an interrupted run (Ctrl-C) removes it, so no partial output is left.

use crate::data::write_shard;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokenizers::Tokenizer;

/// The special token of trained BPE vocabularies (id 0), as in mixlab.
pub const PAD_TOKEN: &str = "<|pad|>";
/// Shards hold uint16 ids.
pub const MAX_VOCAB: usize = 65_535;
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub vocab_size: usize,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub train_shards: usize,
    pub val_shards: usize,
}

#[derive(Debug, Clone)]
pub enum TokenizerChoice {
    /// One token per byte (vocab 256).
    Bytes,
    /// Train a byte-level BPE with this many tokens.
    TrainBpe { vocab_size: usize },
    /// Reuse a `tokenizer.json`.
    Load(PathBuf),
}

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub tokenizer: TokenizerChoice,
    pub text_field: String,
    pub val_split: f64,
    pub tokens_per_shard: usize,
    pub quiet: bool,
    pub stop: Arc<AtomicBool>,
}

/// The input files: the file itself, or a folder's `*.txt` then `*.jsonl`, recursively, sorted.
pub fn input_files(input: &Path) -> Result<Vec<PathBuf>, String> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    if !input.is_dir() {
        return Err(format!(
            "--input {}: no such file or folder",
            input.display()
        ));
    }
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut all = vec![];
    walk(input, &mut all).map_err(|e| format!("--input {}: {e}", input.display()))?;
    all.sort();
    let ext = |p: &PathBuf, e: &str| p.extension().is_some_and(|x| x == e);
    let mut files: Vec<PathBuf> = all.iter().filter(|p| ext(p, "txt")).cloned().collect();
    files.extend(all.iter().filter(|p| ext(p, "jsonl")).cloned());
    if files.is_empty() {
        return Err(format!(
            "--input {}: the folder holds no .txt or .jsonl files",
            input.display()
        ));
    }
    Ok(files)
}

/// Streams the documents of the input files as text chunks of about [`CHUNK_BYTES`].
pub struct Chunks {
    files: Vec<PathBuf>,
    next_file: usize,
    reader: Option<(PathBuf, Box<dyn BufRead + Send>, bool)>,
    text_field: String,
    line_no: usize,
    /// Bytes read so far (for progress).
    pub bytes_read: u64,
    pub error: Option<String>,
}

impl Chunks {
    pub fn new(files: Vec<PathBuf>, text_field: &str) -> Chunks {
        Chunks {
            files,
            next_file: 0,
            reader: None,
            text_field: text_field.into(),
            line_no: 0,
            bytes_read: 0,
            error: None,
        }
    }

    fn open_next(&mut self) -> Option<()> {
        let path = self.files.get(self.next_file)?.clone();
        self.next_file += 1;
        match std::fs::File::open(&path) {
            Ok(f) => {
                let jsonl = path.extension().is_some_and(|e| e == "jsonl");
                self.reader = Some((path, Box::new(BufReader::new(f)), jsonl));
                self.line_no = 0;
                Some(())
            }
            Err(e) => {
                self.error = Some(format!("{}: cannot read: {e}", path.display()));
                None
            }
        }
    }
}

impl Iterator for Chunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut chunk = String::new();
        while chunk.len() < CHUNK_BYTES {
            if self.error.is_some() {
                return None;
            }
            if self.reader.is_none() && self.open_next().is_none() {
                break;
            }
            let (path, reader, jsonl) = self.reader.as_mut().unwrap();
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    self.reader = None;
                    continue;
                }
                Ok(n) => self.bytes_read += n as u64,
                Err(e) => {
                    self.error = Some(format!("{}: {e}", path.display()));
                    return None;
                }
            }
            self.line_no += 1;
            if *jsonl {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let doc: serde_json::Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        self.error = Some(format!(
                            "{}:{}: not JSON: {e}",
                            path.display(),
                            self.line_no
                        ));
                        return None;
                    }
                };
                match doc.get(&self.text_field).and_then(|v| v.as_str()) {
                    Some(text) => chunk.push_str(text),
                    None => {
                        self.error = Some(format!(
                            "{}:{}: no string field {:?} (set --text-field)",
                            path.display(),
                            self.line_no,
                            self.text_field
                        ));
                        return None;
                    }
                }
            } else {
                chunk.push_str(&String::from_utf8_lossy(&line));
            }
        }
        (!chunk.is_empty()).then_some(chunk)
    }
}

/// A fresh byte-level BPE (mixlab's settings), untrained.
fn bpe_tokenizer() -> Tokenizer {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut t = Tokenizer::new(tokenizers::models::bpe::BPE::default());
    t.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    t.with_decoder(Some(ByteLevel::default()));
    t
}

fn train_bpe(files: &[PathBuf], text_field: &str, vocab_size: usize) -> Result<Tokenizer, String> {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut tokenizer = bpe_tokenizer();
    let mut trainer: tokenizers::models::TrainerWrapper =
        tokenizers::models::bpe::BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![tokenizers::AddedToken::from(PAD_TOKEN, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
    let mut chunks = Chunks::new(files.to_vec(), text_field);
    tokenizer
        .train(&mut trainer, chunks.by_ref())
        .map_err(|e| format!("training the BPE tokenizer: {e}"))?;
    if let Some(e) = chunks.error {
        return Err(e);
    }
    Ok(tokenizer)
}

/// GPT-2's byte <-> printable character table that byte-level BPE vocabularies are written in.
fn byte_level_chars() -> std::collections::HashMap<char, u8> {
    let mut bytes: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    chars
        .into_iter()
        .zip(bytes)
        .map(|(c, b)| (char::from_u32(c).unwrap(), b as u8))
        .collect()
}

/// The BPB lookup tables (mixlab §7.3): bytes each token stands for (without a leading space), whether
/// it starts with a space, and whether it is a boundary (special) token.
pub fn lookup_tables(
    tokenizer: Option<&Tokenizer>,
    vocab: usize,
) -> Result<(Vec<u16>, Vec<u8>, Vec<u8>), String> {
    let Some(tok) = tokenizer else {
        return Ok((vec![1; vocab], vec![0; vocab], vec![0; vocab]));
    };
    let table = byte_level_chars();
    let special: std::collections::HashSet<u32> = tok
        .get_added_vocabulary()
        .get_vocab()
        .values()
        .copied()
        .collect();
    let (mut bytes, mut space, mut boundary) =
        (vec![0u16; vocab], vec![0u8; vocab], vec![0u8; vocab]);
    for id in 0..vocab {
        if special.contains(&(id as u32)) {
            boundary[id] = 1;
            continue;
        }
        let Some(piece) = tok.id_to_token(id as u32) else {
            boundary[id] = 1;
            continue;
        };
        let raw: Vec<u8> = piece
            .chars()
            .map(|c| {
                table.get(&c).copied().ok_or_else(|| {
                    format!("token {id} ({piece:?}) is not byte-level BPE: cannot count its bytes")
                })
            })
            .collect::<Result<_, _>>()?;
        let lead = raw.first() == Some(&b' ');
        space[id] = lead as u8;
        bytes[id] = (raw.len() - lead as usize) as u16;
    }
    Ok((bytes, space, boundary))
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// Runs a whole preparation (see the module docs).
pub fn prepare(opts: &PrepareOptions) -> Result<Prepared, String> {
    if !(0.0..1.0).contains(&opts.val_split) {
        return Err(format!("--val-split {} must be in [0, 1)", opts.val_split));
    }
    if opts.tokens_per_shard == 0 {
        return Err("--tokens-per-shard must be > 0".into());
    }
    if let TokenizerChoice::TrainBpe { vocab_size } = opts.tokenizer {
        if vocab_size > MAX_VOCAB {
            return Err(format!(
                "--vocab-size {vocab_size} is over {MAX_VOCAB}: shards hold uint16 token ids"
            ));
        }
        if vocab_size < 257 {
            return Err(format!(
                "--vocab-size {vocab_size} must be > 256 (the byte alphabet plus {PAD_TOKEN}); use --byte-level for 256"
            ));
        }
    }
    let files = input_files(&opts.input)?;
    std::fs::create_dir_all(&opts.output)
        .map_err(|e| format!("{}: cannot create: {e}", opts.output.display()))?;
    // Remove what an earlier, killed run may have left.
    if let Ok(rd) = std::fs::read_dir(&opts.output) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".prepare-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let staging = opts.output.join(format!(".prepare-{}", std::process::id()));
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("{}: cannot create: {e}", staging.display()))?;
    let result = prepare_in(opts, &files, &staging);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        return result;
    }
    // Move the finished files into place, then drop the staging folder.
    let entries: Vec<_> = std::fs::read_dir(&staging)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with("tokens.u16"))
        .collect();
    for p in entries {
        let dest = opts.output.join(p.file_name().unwrap());
        std::fs::rename(&p, &dest)
            .map_err(|e| format!("{}: cannot move into place: {e}", dest.display()))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn prepare_in(
    opts: &PrepareOptions,
    files: &[PathBuf],
    staging: &Path,
) -> Result<Prepared, String> {
    let interrupted = || -> Result<(), String> {
        if opts.stop.load(Ordering::SeqCst) {
            Err("interrupted: no output was written".into())
        } else {
            Ok(())
        }
    };
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    let say = |msg: String| {
        if !opts.quiet {
            eprintln!("{msg}");
        }
    };
    let tokenizer: Option<Tokenizer> = match &opts.tokenizer {
        TokenizerChoice::Bytes => None,
        TokenizerChoice::Load(p) => Some(
            Tokenizer::from_file(p)
                .map_err(|e| format!("--tokenizer-path {}: {e}", p.display()))?,
        ),
        TokenizerChoice::TrainBpe { vocab_size } => {
            say(format!(
                "training a byte-level BPE of {vocab_size} tokens on {} file(s), {:.1} MB",
                files.len(),
                total_bytes as f64 / 1e6
            ));
            Some(train_bpe(files, &opts.text_field, *vocab_size)?)
        }
    };
    interrupted()?;
    let vocab = tokenizer.as_ref().map_or(256, |t| t.get_vocab_size(true));
    if vocab > MAX_VOCAB + 1 {
        return Err(format!(
            "the tokenizer has {vocab} tokens: over {} cannot be stored as uint16 ids",
            MAX_VOCAB + 1
        ));
    }

    // Pass 1: tokenize everything into a flat uint16 file (the split needs the total).
    let flat_path = staging.join("tokens.u16");
    let mut flat = std::io::BufWriter::new(
        std::fs::File::create(&flat_path).map_err(|e| format!("{}: {e}", flat_path.display()))?,
    );
    let mut chunks = Chunks::new(files.to_vec(), &opts.text_field);
    let mut n_tokens = 0usize;
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        interrupted()?;
        let batch: Vec<String> = chunks.by_ref().take(rayon_batch()).collect();
        if batch.is_empty() {
            break;
        }
        let ids: Vec<Vec<u32>> = match &tokenizer {
            None => batch
                .iter()
                .map(|c| c.bytes().map(u32::from).collect())
                .collect(),
            Some(t) => t
                .encode_batch(batch, false)
                .map_err(|e| format!("tokenizing: {e}"))?
                .into_iter()
                .map(|e| e.get_ids().to_vec())
                .collect(),
        };
        for doc in ids {
            for id in doc {
                let id = u16::try_from(id)
                    .map_err(|_| format!("token id {id} does not fit in uint16"))?;
                flat.write_all(&id.to_le_bytes())
                    .map_err(|e| e.to_string())?;
                n_tokens += 1;
            }
        }
        if !opts.quiet && last_report.elapsed().as_secs_f64() > 2.0 {
            last_report = Instant::now();
            let done = chunks.bytes_read as f64 / total_bytes.max(1) as f64;
            eprintln!(
                "  tokenized {:.1}% ({n_tokens} tokens, {:.1} MB/s)",
                100.0 * done,
                chunks.bytes_read as f64 / 1e6 / started.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(e) = chunks.error {
        return Err(e);
    }
    flat.flush().map_err(|e| e.to_string())?;
    drop(flat);
    if n_tokens < 2 {
        return Err(format!(
            "--input {}: too little text ({n_tokens} tokens)",
            opts.input.display()
        ));
    }
    let n_val = if opts.val_split > 0.0 {
        ((n_tokens as f64 * opts.val_split) as usize).max(1)
    } else {
        0
    };
    let n_train = n_tokens - n_val;

    // Pass 2: shards, read back in shard-sized pieces.
    let mut reader = BufReader::new(std::fs::File::open(&flat_path).map_err(|e| e.to_string())?);
    let mut write_split = |prefix: &str, count: usize| -> Result<usize, String> {
        let mut shards = 0;
        let mut left = count;
        while left > 0 {
            interrupted()?;
            let n = left.min(opts.tokens_per_shard);
            let mut buf = vec![0u8; 2 * n];
            reader.read_exact(&mut buf).map_err(|e| e.to_string())?;
            let tokens: Vec<u16> = buf
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            let path = staging.join(format!("{prefix}_{shards:05}.bin"));
            write_shard(&path, &tokens)
                .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
            shards += 1;
            left -= n;
        }
        Ok(shards)
    };
    let train_shards = write_split("train", n_train)?;
    let val_shards = write_split("val", n_val)?;

    // Tokenizer, lookup tables, manifest.
    if let Some(t) = &tokenizer {
        t.save(staging.join("tokenizer.json"), true)
            .map_err(|e| format!("cannot write tokenizer.json: {e}"))?;
    }
    let (bytes, space, boundary) = lookup_tables(tokenizer.as_ref(), vocab)?;
    let bytes_le: Vec<u8> = bytes.iter().flat_map(|b| b.to_le_bytes()).collect();
    write_file(&staging.join("bytes_per_token.bin"), &bytes_le)?;
    write_file(&staging.join("has_leading_space.bin"), &space)?;
    write_file(&staging.join("is_boundary_token.bin"), &boundary)?;
    let special: serde_json::Map<String, serde_json::Value> = tokenizer
        .as_ref()
        .map(|t| {
            t.get_added_vocabulary()
                .get_vocab()
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect()
        })
        .unwrap_or_default();
    let manifest = serde_json::json!({
        "format": "mixlab.dataset", "version": 1, "representation": "discrete_tokens",
        "tokenizer": if tokenizer.is_some() { "tokenizer.json" } else { "bytes" },
        "vocab_size": vocab, "special_token_ids": special,
        "splits": {"train": {"tokens": n_train, "shards": train_shards},
                   "val": {"tokens": n_val, "shards": val_shards}},
        "lookup_tables": {"bytes_per_token": "bytes_per_token.bin", "has_leading_space": "has_leading_space.bin",
                          "is_boundary_token": "is_boundary_token.bin"},
    });
    write_file(
        &staging.join("mixlab.dataset.json"),
        (serde_json::to_string_pretty(&manifest).unwrap() + "\n").as_bytes(),
    )?;
    Ok(Prepared {
        vocab_size: vocab,
        train_tokens: n_train,
        val_tokens: n_val,
        train_shards,
        val_shards,
    })
}

/// Chunks per `encode_batch` call: enough to keep every core busy.
fn rayon_batch() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::read_shard;

    fn read_all(out: &Path) -> Vec<u16> {
        let mut all = vec![];
        for prefix in ["train", "val"] {
            let mut i = 0;
            while let Ok(t) = read_shard(&out.join(format!("{prefix}_{i:05}.bin"))) {
                all.extend(t);
                i += 1;
            }
        }
        all
    }

    #[test]
    fn bytes_round_trip_with_split() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, b"hello, world! 0123456789").unwrap();
        let out = dir.path().join("out");
        let p = prepare(&PrepareOptions {
            input: input.clone(),
            output: out.clone(),
            tokenizer: TokenizerChoice::Bytes,
            text_field: "text".into(),
            val_split: 0.25,
            tokens_per_shard: 10,
            quiet: true,
            stop: Arc::new(AtomicBool::new(false)),
        })
        .unwrap();
        assert_eq!((p.train_tokens, p.val_tokens), (18, 6));
        assert_eq!((p.train_shards, p.val_shards), (2, 1));
        let text: Vec<u8> = read_all(&out).iter().map(|&t| t as u8).collect();
        assert_eq!(text, b"hello, world! 0123456789");
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".partial") || n.starts_with(".prepare")),
            "{names:?}"
        );
        assert_eq!(
            std::fs::read(out.join("bytes_per_token.bin"))
                .unwrap()
                .len(),
            512
        );
    }

    #[test]
    fn bpe_round_trips_text_and_its_tables_are_right() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        std::fs::create_dir_all(corpus.join("sub")).unwrap();
        let para = "the cat sat on the mat. the dog sat on the log. a cat and a dog.\n";
        std::fs::write(corpus.join("a.txt"), para.repeat(40)).unwrap();
        let docs: String = (0..30)
            .map(|i| {
                serde_json::json!({"body": format!("document {i}: the cat and the dog. "), "id": i})
                    .to_string()
                    + "\n"
            })
            .collect();
        std::fs::write(corpus.join("sub/b.jsonl"), docs).unwrap();
        let out = dir.path().join("out");
        let opts = PrepareOptions {
            input: corpus.clone(),
            output: out.clone(),
            tokenizer: TokenizerChoice::TrainBpe { vocab_size: 300 },
            text_field: "body".into(),
            val_split: 0.1,
            tokens_per_shard: 200,
            quiet: true,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let p = prepare(&opts).unwrap();
        assert!(p.vocab_size > 256 && p.vocab_size <= 300, "{p:?}");
        let tok = Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
        assert_eq!(tok.token_to_id(PAD_TOKEN), Some(0));
        // text -> shards -> tokens -> text
        let ids: Vec<u32> = read_all(&out).iter().map(|&t| t as u32).collect();
        assert_eq!(ids.len(), p.train_tokens + p.val_tokens);
        let text = tok.decode(&ids, false).unwrap();
        let expected = para.repeat(40)
            + &(0..30)
                .map(|i| format!("document {i}: the cat and the dog. "))
                .collect::<String>();
        assert_eq!(text, expected);
        // BPE compresses: fewer tokens than bytes
        assert!(
            ids.len() < expected.len() / 2,
            "{} tokens for {} bytes",
            ids.len(),
            expected.len()
        );
        // LUTs by hand: the bytes the table counts for the stream add up to the text's bytes
        let bytes = std::fs::read(out.join("bytes_per_token.bin")).unwrap();
        let space = std::fs::read(out.join("has_leading_space.bin")).unwrap();
        let boundary = std::fs::read(out.join("is_boundary_token.bin")).unwrap();
        assert_eq!(bytes.len(), 2 * p.vocab_size);
        assert_eq!(boundary[0], 1, "the pad token is a boundary");
        let b = |id: usize| u16::from_le_bytes([bytes[2 * id], bytes[2 * id + 1]]) as usize;
        let counted: usize = ids
            .iter()
            .map(|&i| b(i as usize) + space[i as usize] as usize)
            .sum();
        assert_eq!(counted, expected.len());
        // a token with a leading space: " cat" (if merged) counts 3 bytes plus the space
        if let Some(id) = tok.token_to_id("Ġcat") {
            assert_eq!((b(id as usize), space[id as usize]), (3, 1));
        }
        let e = tok.token_to_id("e").unwrap() as usize;
        assert_eq!((b(e), space[e]), (1, 0));
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("mixlab.dataset.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(m["vocab_size"], p.vocab_size);
        assert_eq!(m["special_token_ids"][PAD_TOKEN], 0);

        // Reusing the tokenizer gives the same tokens.
        let again = dir.path().join("again");
        let p2 = prepare(&PrepareOptions {
            output: again.clone(),
            tokenizer: TokenizerChoice::Load(out.join("tokenizer.json")),
            ..opts.clone()
        })
        .unwrap();
        assert_eq!(p2, p);
        assert_eq!(read_all(&again), read_all(&out));
    }

    #[test]
    fn interrupted_or_failed_prepare_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.txt"), "some text\n".repeat(100)).unwrap();
        let out = dir.path().join("out");
        let stop = Arc::new(AtomicBool::new(true));
        let e = prepare(&PrepareOptions {
            input: dir.path().join("in.txt"),
            output: out.clone(),
            tokenizer: TokenizerChoice::Bytes,
            text_field: "text".into(),
            val_split: 0.1,
            tokens_per_shard: 100,
            quiet: true,
            stop,
        })
        .unwrap_err();
        assert!(e.contains("interrupted"), "{e}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "nothing left in the output folder"
        );
        // a bad JSONL field fails with the file, line and fix, and leaves nothing either
        std::fs::write(
            dir.path().join("d.jsonl"),
            "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n",
        )
        .unwrap();
        let e = prepare(&PrepareOptions {
            input: dir.path().join("d.jsonl"),
            output: out.clone(),
            tokenizer: TokenizerChoice::Bytes,
            text_field: "text".into(),
            val_split: 0.1,
            tokens_per_shard: 100,
            quiet: true,
            stop: Arc::new(AtomicBool::new(false)),
        })
        .unwrap_err();
        assert!(e.contains("d.jsonl:2") && e.contains("--text-field"), "{e}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        // vocabularies over uint16 are refused
        let e = prepare(&PrepareOptions {
            input: dir.path().join("in.txt"),
            output: out,
            tokenizer: TokenizerChoice::TrainBpe { vocab_size: 70_000 },
            text_field: "text".into(),
            val_split: 0.1,
            tokens_per_shard: 100,
            quiet: true,
            stop: Arc::new(AtomicBool::new(false)),
        })
        .unwrap_err();
        assert!(e.contains("65535"), "{e}");
    }
}
