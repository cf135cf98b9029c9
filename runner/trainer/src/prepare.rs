//! Data preparation: text -> `mixlab_token_shard_v1` shards, the tokenizer, a dataset manifest and the
//! bits-per-byte lookup tables.
//!
//! * Input: a `.txt` file, a `.jsonl` file (documents in `--text-field`), or a folder (every `*.txt`,
//!   then every `*.jsonl`, recursively, sorted). Each document (a JSONL record, a text file) is
//!   tokenized on its own and the token streams are concatenated with no separator (mixlab). Input is
//!   streamed, so a corpus larger than memory works: a text file longer than about 1 MiB is cut into
//!   pieces only where one newline stands between two non-space characters, where byte-level BPE's
//!   pre-tokenizer splits anyway, so the tokens equal one pass over the file (a file with no such
//!   place in 4 MiB, e.g. CRLF line ends, is cut after a newline there).
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

/// Streams the input files as tokenization units: each JSONL document, and each text file in pieces
/// of about [`CHUNK_BYTES`] cut where the tokens cannot change (see the module documentation).
pub struct Chunks {
    files: Vec<PathBuf>,
    next_file: usize,
    reader: Option<(PathBuf, Box<dyn BufRead + Send>, bool)>,
    /// A line read ahead (to decide whether a text piece may end before it).
    pending: Option<Vec<u8>>,
    text_field: String,
    /// Text pieces end at the first safe place after this many bytes.
    piece_bytes: usize,
    line_no: usize,
    /// Bytes read so far (for progress).
    pub bytes_read: u64,
    pub error: Option<String>,
}

/// A text piece may end after `piece` and before `next` when the piece ends in one newline after a
/// non-space character and `next` starts with a non-space character: byte-level BPE's pre-tokenizer
/// makes that newline a token of its own either way.
fn safe_cut(piece: &str, next: &[u8]) -> bool {
    let mut tail = piece.chars().rev();
    tail.next() == Some('\n')
        && tail.next().is_some_and(|c| !c.is_whitespace())
        && String::from_utf8_lossy(&next[..next.len().min(4)])
            .chars()
            .next()
            .is_some_and(|c| !c.is_whitespace() && c != '\u{FFFD}')
}

impl Chunks {
    pub fn new(files: Vec<PathBuf>, text_field: &str) -> Chunks {
        Self::with_piece_bytes(files, text_field, CHUNK_BYTES)
    }

    pub fn with_piece_bytes(files: Vec<PathBuf>, text_field: &str, piece_bytes: usize) -> Chunks {
        Chunks {
            files,
            next_file: 0,
            reader: None,
            pending: None,
            piece_bytes: piece_bytes.max(1),
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

    /// The next line of the open file (`None` at its end, or on an error, which is recorded).
    fn line(&mut self) -> Option<Vec<u8>> {
        if let Some(l) = self.pending.take() {
            return Some(l);
        }
        let (path, reader, _) = self.reader.as_mut()?;
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(n) => {
                self.bytes_read += n as u64;
                self.line_no += 1;
                Some(line)
            }
            Err(e) => {
                self.error = Some(format!("{}: {e}", path.display()));
                None
            }
        }
    }

    /// The next document of the open JSONL file (`None` at its end or on an error).
    fn jsonl_document(&mut self) -> Option<String> {
        loop {
            let line = self.line()?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let path = self.reader.as_ref().map(|r| r.0.display().to_string());
            let path = path.unwrap_or_default();
            let doc: serde_json::Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    self.error = Some(format!("{path}:{}: not JSON: {e}", self.line_no));
                    return None;
                }
            };
            match doc.get(&self.text_field).and_then(|v| v.as_str()) {
                Some("") => continue,
                Some(text) => return Some(text.to_string()),
                None => {
                    self.error = Some(format!(
                        "{path}:{}: no string field {:?} (set --text-field)",
                        self.line_no, self.text_field
                    ));
                    return None;
                }
            }
        }
    }

    /// The next piece of the open text file (`None` at its end or on an error).
    fn text_piece(&mut self) -> Option<String> {
        let mut piece = String::new();
        while let Some(line) = self.line() {
            if piece.len() >= self.piece_bytes
                && (safe_cut(&piece, &line) || piece.len() >= 4 * self.piece_bytes)
            {
                self.pending = Some(line);
                break;
            }
            piece.push_str(&String::from_utf8_lossy(&line));
        }
        (!piece.is_empty()).then_some(piece)
    }
}

impl Iterator for Chunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if self.error.is_some() {
                return None;
            }
            if self.reader.is_none() && self.open_next().is_none() {
                return None;
            }
            let jsonl = self.reader.as_ref().is_some_and(|r| r.2);
            let unit = if jsonl {
                self.jsonl_document()
            } else {
                self.text_piece()
            };
            match unit {
                Some(u) => return Some(u),
                // end of this file (or an error, seen above)
                None => self.reader = None,
            }
        }
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
pub fn byte_level_chars() -> std::collections::HashMap<char, u8> {
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

/// Bytes per token, leading-space flags and boundary flags, one entry per token id.
type LookupTables = (Vec<u16>, Vec<u8>, Vec<u8>);

/// The BPB lookup tables (mixlab §7.3): bytes each token stands for (without a leading space), whether
/// it starts with a space, and whether it is a boundary (special) token.
pub fn lookup_tables(tokenizer: Option<&Tokenizer>, vocab: usize) -> Result<LookupTables, String> {
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

/// Err when Ctrl-C asked the run to stop.
fn check_stop(opts: &PrepareOptions) -> Result<(), String> {
    if opts.stop.load(Ordering::SeqCst) {
        Err("interrupted: no output was written".into())
    } else {
        Ok(())
    }
}

fn say(opts: &PrepareOptions, msg: String) {
    if !opts.quiet {
        eprintln!("{msg}");
    }
}

/// The tokenizer `opts` asks for (`None`: bytes), trained on `files` for a BPE.
fn choose_tokenizer(
    opts: &PrepareOptions,
    files: &[PathBuf],
    total_bytes: u64,
) -> Result<Option<Tokenizer>, String> {
    Ok(match &opts.tokenizer {
        TokenizerChoice::Bytes => None,
        TokenizerChoice::Load(p) => Some(
            Tokenizer::from_file(p)
                .map_err(|e| format!("--tokenizer-path {}: {e}", p.display()))?,
        ),
        TokenizerChoice::TrainBpe { vocab_size } => {
            let mb = total_bytes as f64 / 1e6;
            let n = files.len();
            say(
                opts,
                format!(
                    "training a byte-level BPE of {vocab_size} tokens on {n} file(s), {mb:.1} MB"
                ),
            );
            Some(train_bpe(files, &opts.text_field, *vocab_size)?)
        }
    })
}

/// Pass 1: tokenizes every file into the flat uint16 file `flat_path` (the split needs the total),
/// with progress every 2 s; returns the number of tokens.
fn tokenize_all(
    opts: &PrepareOptions,
    files: &[PathBuf],
    tokenizer: Option<&Tokenizer>,
    total_bytes: u64,
    flat_path: &Path,
) -> Result<usize, String> {
    let mut flat = std::io::BufWriter::new(
        std::fs::File::create(flat_path).map_err(|e| format!("{}: {e}", flat_path.display()))?,
    );
    let mut chunks = Chunks::new(files.to_vec(), &opts.text_field);
    let mut n_tokens = 0usize;
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        check_stop(opts)?;
        let batch = next_batch(&mut chunks);
        if batch.is_empty() {
            break;
        }
        let ids: Vec<Vec<u32>> = match tokenizer {
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
        for id in ids.into_iter().flatten() {
            let id =
                u16::try_from(id).map_err(|_| format!("token id {id} does not fit in uint16"))?;
            flat.write_all(&id.to_le_bytes())
                .map_err(|e| e.to_string())?;
            n_tokens += 1;
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
    Ok(n_tokens)
}

/// Pass 2: the next `count` tokens of `reader` as `<prefix>_XXXXX.bin` shards in `staging`;
/// returns how many.
fn write_split(
    opts: &PrepareOptions,
    reader: &mut impl Read,
    staging: &Path,
    prefix: &str,
    count: usize,
) -> Result<usize, String> {
    let mut shards = 0;
    let mut left = count;
    while left > 0 {
        check_stop(opts)?;
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
}

/// The tokenizer (byte-level data gets one too, token id = byte value, so every prepared folder
/// works with `generate --tokenizer DIR`), the lookup tables and the manifest, into `staging`.
fn write_metadata(
    staging: &Path,
    tokenizer: Option<&Tokenizer>,
    vocab: usize,
    done: &Prepared,
) -> Result<(), String> {
    let written = match tokenizer {
        Some(t) => t.clone(),
        None => byte_level_tokenizer()?,
    };
    written
        .save(staging.join("tokenizer.json"), true)
        .map_err(|e| format!("cannot write tokenizer.json: {e}"))?;
    let (bytes, space, boundary) = lookup_tables(tokenizer, vocab)?;
    let bytes_le: Vec<u8> = bytes.iter().flat_map(|b| b.to_le_bytes()).collect();
    write_file(&staging.join("bytes_per_token.bin"), &bytes_le)?;
    write_file(&staging.join("has_leading_space.bin"), &space)?;
    write_file(&staging.join("is_boundary_token.bin"), &boundary)?;
    let special: serde_json::Map<String, serde_json::Value> = tokenizer
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
        "splits": {"train": {"tokens": done.train_tokens, "shards": done.train_shards},
                   "val": {"tokens": done.val_tokens, "shards": done.val_shards}},
        "lookup_tables": {"bytes_per_token": "bytes_per_token.bin", "has_leading_space": "has_leading_space.bin",
                          "is_boundary_token": "is_boundary_token.bin"},
    });
    write_file(
        &staging.join("mixlab.dataset.json"),
        (serde_json::to_string_pretty(&manifest).unwrap() + "\n").as_bytes(),
    )
}

fn prepare_in(
    opts: &PrepareOptions,
    files: &[PathBuf],
    staging: &Path,
) -> Result<Prepared, String> {
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    let tokenizer = choose_tokenizer(opts, files, total_bytes)?;
    check_stop(opts)?;
    let vocab = tokenizer.as_ref().map_or(256, |t| t.get_vocab_size(true));
    if vocab > MAX_VOCAB + 1 {
        return Err(format!(
            "the tokenizer has {vocab} tokens: over {} cannot be stored as uint16 ids",
            MAX_VOCAB + 1
        ));
    }
    let flat_path = staging.join("tokens.u16");
    let n_tokens = tokenize_all(opts, files, tokenizer.as_ref(), total_bytes, &flat_path)?;
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
    let mut reader = BufReader::new(std::fs::File::open(&flat_path).map_err(|e| e.to_string())?);
    let train_shards = write_split(opts, &mut reader, staging, "train", n_train)?;
    let val_shards = write_split(opts, &mut reader, staging, "val", n_val)?;
    let done = Prepared {
        vocab_size: vocab,
        train_tokens: n_train,
        val_tokens: n_val,
        train_shards,
        val_shards,
    };
    write_metadata(staging, tokenizer.as_ref(), vocab, &done)?;
    Ok(done)
}

/// Units for one `encode_batch` call: about two pieces' worth of text per core (many small JSONL
/// documents, or a few text pieces), so every core stays busy.
fn next_batch(chunks: &mut Chunks) -> Vec<String> {
    let budget = std::thread::available_parallelism().map_or(4, |n| n.get() * 2) * CHUNK_BYTES;
    let (mut batch, mut bytes) = (Vec::new(), 0);
    while bytes < budget {
        let Some(unit) = chunks.next() else { break };
        bytes += unit.len();
        batch.push(unit);
    }
    batch
}

/// A tokenizer whose token ids are byte values (vocab 256): GPT-2's byte-to-character alphabet as a
/// BPE vocabulary without merges, so every byte is its own token, with the byte-level decoder.
pub fn byte_level_tokenizer() -> Result<Tokenizer, String> {
    use tokenizers::decoders::byte_level::ByteLevel as ByteDecoder;
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let vocab: tokenizers::models::bpe::Vocab = byte_level_chars()
        .into_iter()
        .map(|(c, b)| (c.to_string(), b as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .map_err(|e| format!("byte-level tokenizer: {e}"))?;
    let mut t = Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(
        ByteLevel::default()
            .add_prefix_space(false)
            .use_regex(false),
    ));
    t.with_decoder(Some(ByteDecoder::default()));
    Ok(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_level_tokenizer_ids_are_bytes() {
        let t = super::byte_level_tokenizer().unwrap();
        let text = "Hi é\n\t~";
        let ids = t.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, text.bytes().map(u32::from).collect::<Vec<_>>());
        assert_eq!(t.decode(&ids, false).unwrap(), text);
        assert_eq!(t.get_vocab_size(false), 256);
    }

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

    /// A byte-level BPE whose merges join whitespace runs, so a piece boundary in the wrong place
    /// (inside a run) would change the tokens.
    fn whitespace_merging_bpe() -> Tokenizer {
        let chars: std::collections::HashMap<u8, char> = byte_level_chars()
            .into_iter()
            .map(|(c, b)| (b, c))
            .collect();
        let (space, newline) = (chars[&b' '].to_string(), chars[&b'\n'].to_string());
        let mut vocab: std::collections::HashMap<String, u32> = (0..=255u8)
            .map(|b| (chars[&b].to_string(), b as u32))
            .collect();
        let mut merges = vec![];
        for (a, b) in [
            (&newline, &newline),
            (&space, &newline),
            (&space, &space),
            (&newline, &space),
        ] {
            vocab.insert(format!("{a}{b}"), vocab.len() as u32);
            merges.push((a.clone(), b.clone()));
        }
        let bpe = tokenizers::models::bpe::BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .build()
            .unwrap();
        let mut t = bpe_tokenizer();
        t.with_model(bpe);
        t
    }

    #[test]
    fn long_text_is_cut_only_where_the_tokens_stay_the_same() {
        let tok = whitespace_merging_bpe();
        let ids = |text: &str| tok.encode(text, false).unwrap().get_ids().to_vec();
        // the tokenizer notices a cut inside a whitespace run
        assert_ne!(ids("a \nb"), [ids("a \n"), ids("b")].concat());
        let block = "First line of a paragraph.\nIndented:\n    code here\ntrailing space \n\n\nafter blanks\n \nspace line\nplain\n";
        let text = block.repeat(40);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("long.txt");
        std::fs::write(&file, &text).unwrap();
        let whole = ids(&text);
        // cutting after every newline changes the tokens of this text
        let per_line: Vec<u32> = text.split_inclusive('\n').flat_map(&ids).collect();
        assert!(
            per_line != whole,
            "the test text does not exercise the cut rule"
        );
        // the real pieces keep them
        let pieces: Vec<String> = Chunks::with_piece_bytes(vec![file], "text", 64).collect();
        assert!(pieces.len() >= 20, "{} pieces", pieces.len());
        assert_eq!(pieces.concat(), text);
        let by_piece: Vec<u32> = pieces.iter().flat_map(|p| ids(p)).collect();
        assert!(by_piece == whole, "cutting changed the tokens");
    }

    #[test]
    fn jsonl_documents_are_tokenized_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("docs.jsonl");
        std::fs::write(
            &file,
            "{\"text\": \"one \"}\n\n{\"text\": \"\\ntwo\"}\n{\"text\": \"\"}\n",
        )
        .unwrap();
        let docs: Vec<String> = Chunks::new(vec![file], "text").collect();
        assert_eq!(docs, ["one ", "\ntwo"]);
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
