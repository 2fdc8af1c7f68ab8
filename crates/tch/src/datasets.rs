//! Loaders for the two data formats `herald train` reads: the digits CSV (optionally gzipped) and MNIST IDX
//! files. Both return float inputs scaled to `[0, 1]` and `i64` class targets, on the CPU.
//!
//! Malformed files give an error naming the file, the line or the header field, and what was expected. These
//! loaders read whole files into memory; they do not stream, download or cache anything.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Inputs `[n, features]` (float, scaled to `[0, 1]`) and targets `[n]` (i64).
#[derive(Debug)]
pub struct Examples {
    /// The inputs, `[n, features]` floats scaled to `[0, 1]`.
    pub x: Tensor,
    /// The class labels, `[n]` i64.
    pub y: Tensor,
}

/// Reads a file, gunzipping it when it starts with the gzip magic bytes (whatever its name).
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::file(path, format!("not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The digits CSV: one example per line, no header, 64 pixel values `0..=16` then the label `0..=9`.
/// Blank lines are skipped. Pixels are divided by 16.
pub fn load_digits_csv(path: impl AsRef<Path>) -> Result<Examples> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::file(path, format!("not UTF-8 text: {e}")))?;
    let mut pixels: Vec<f32> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |message: String| Error::file(path, format!("line {}: {message}", i + 1));
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != 65 {
            return Err(at(format!("{} columns; expected 65 (64 pixels, then the label)", cells.len())));
        }
        for (c, cell) in cells[..64].iter().enumerate() {
            let v: f32 =
                cell.parse().map_err(|_| at(format!("column {}: `{cell}` is not a number", c + 1)))?;
            if !(0.0..=16.0).contains(&v) {
                return Err(at(format!("column {}: pixel {v} is outside 0..=16", c + 1)));
            }
            pixels.push(v / 16.0);
        }
        let label: f64 =
            cells[64].parse().map_err(|_| at(format!("label `{}` is not a number", cells[64])))?;
        if label.fract() != 0.0 || !(0.0..=9.0).contains(&label) {
            return Err(at(format!("label {label} is not a digit 0..=9")));
        }
        labels.push(label as i64);
    }
    if labels.is_empty() {
        return Err(Error::file(path, "no examples: the file is empty"));
    }
    let n = labels.len() as i64;
    let x = Tensor::f_from_slice(&pixels)?.f_view([n, 64])?;
    let y = Tensor::f_from_slice(&labels)?;
    Ok(Examples { x, y })
}

/// MNIST's four IDX files, as in the original distribution (optionally gzipped, `.gz` names accepted).
#[derive(Debug)]
pub struct Mnist {
    /// The training images and labels (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`).
    pub train: Examples,
    /// The test images and labels (`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`).
    pub test: Examples,
}

/// Loads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte` (each optionally ending in `.gz`) from `dir`. Images become `[n, rows*cols]`
/// floats divided by 255.
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<Mnist> {
    let dir = dir.as_ref();
    let part = |images: &str, labels: &str| -> Result<Examples> {
        let x = read_idx_images(&find(dir, images)?)?;
        let y = read_idx_labels(&find(dir, labels)?)?;
        let (nx, ny) = (x.size()[0], y.size()[0]);
        if nx != ny {
            return Err(Error::Data(format!(
                "{}: {nx} images but {ny} labels in {images} / {labels}",
                dir.display()
            )));
        }
        Ok(Examples { x, y })
    };
    Ok(Mnist {
        train: part("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        test: part("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    })
}

/// Whether `dir` looks like an MNIST folder (holds a training images file).
pub fn is_mnist_dir(dir: impl AsRef<Path>) -> bool {
    find(dir.as_ref(), "train-images-idx3-ubyte").is_ok()
}

/// `name` or `name.gz` in `dir`; also the `train-images.idx3-ubyte` spelling some mirrors use.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let dotted = name.replacen("-idx", ".idx", 1);
    for candidate in [name.to_owned(), format!("{name}.gz"), dotted.clone(), format!("{dotted}.gz")] {
        let path = dir.join(&candidate);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(Error::file(dir, format!("no `{name}` (or `{name}.gz`) here; is this an MNIST folder?")))
}

/// Parses an IDX header: magic `0x0000_08_NN` (unsigned bytes, NN dimensions), then NN big-endian u32 sizes.
/// Returns the sizes and the data.
fn read_idx(path: &Path, want_dims: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 {
        return Err(Error::file(path, "too short for an IDX header"));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(Error::file(
            path,
            format!(
                "bad IDX magic {:02x}{:02x}{:02x}{:02x}; expected 000008{want_dims:02x} (unsigned bytes)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[3] != want_dims {
        return Err(Error::file(path, format!("{} dimensions; expected {want_dims}", bytes[3])));
    }
    let header = 4 + 4 * usize::from(want_dims);
    if bytes.len() < header {
        return Err(Error::file(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..usize::from(want_dims))
        .map(|d| {
            let at = 4 + 4 * d;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        })
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let have = bytes.len() - header;
    match expected {
        Some(e) if e == have => Ok((dims, bytes[header..].to_vec())),
        Some(e) => Err(Error::file(
            path,
            format!("header says {dims:?} = {e} bytes of data but the file has {have}"),
        )),
        None => Err(Error::file(path, format!("header sizes {dims:?} overflow"))),
    }
}

fn read_idx_images(path: &Path) -> Result<Tensor> {
    let (dims, data) = read_idx(path, 3)?;
    let (n, features) = (dims[0] as i64, (dims[1] * dims[2]) as i64);
    Ok(Tensor::f_from_slice(&data)?.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?.f_view([n, features])?)
}

fn read_idx_labels(path: &Path) -> Result<Tensor> {
    let (_, data) = read_idx(path, 1)?;
    if let Some(bad) = data.iter().find(|&&l| l > 9) {
        return Err(Error::file(path, format!("label {bad} is not a digit 0..=9")));
    }
    Ok(Tensor::f_from_slice(&data)?.f_to_kind(Kind::Int64)?)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).expect("gzip in memory");
        enc.finish().expect("gzip in memory")
    }

    fn floats(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.f_flatten(0, -1).expect("flat")).expect("to vec")
    }

    fn longs(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t).expect("to vec")
    }

    /// Writes a small MNIST folder: 3 training and 2 test images of 2x2 pixels.
    fn mnist_dir(gzip_train: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, bytes: Vec<u8>, gzip: bool| {
            let (name, bytes) =
                if gzip { (format!("{name}.gz"), gz(&bytes)) } else { (name.to_owned(), bytes) };
            std::fs::write(dir.path().join(name), bytes).expect("write");
        };
        write(
            "train-images-idx3-ubyte",
            idx(&[3, 2, 2], &[0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8]),
            gzip_train,
        );
        write("train-labels-idx1-ubyte", idx(&[3], &[7, 0, 9]), gzip_train);
        write("t10k-images-idx3-ubyte", idx(&[2, 2, 2], &[9, 9, 9, 9, 0, 0, 0, 0]), false);
        write("t10k-labels-idx1-ubyte", idx(&[2], &[1, 2]), false);
        dir
    }

    #[test]
    fn mnist_plain_and_gzipped() {
        for gzip in [false, true] {
            let dir = mnist_dir(gzip);
            assert!(is_mnist_dir(dir.path()));
            let m = load_mnist(dir.path()).expect("loads");
            assert_eq!(m.train.x.size(), [3, 4]);
            assert_eq!(longs(&m.train.y), [7, 0, 9]);
            assert_eq!(floats(&m.train.x)[..4], [0.0, 1.0, 0.2, 0.4]);
            assert_eq!(m.test.x.size(), [2, 4]);
            assert_eq!(longs(&m.test.y), [1, 2]);
        }
    }

    #[test]
    fn mnist_errors_name_the_problem() {
        let dir = mnist_dir(false);
        let p = dir.path().join("train-labels-idx1-ubyte");
        std::fs::write(&p, idx(&[4], &[1, 2, 3])).expect("write");
        let e = load_mnist(dir.path()).expect_err("truncated").to_string();
        assert!(e.contains("4 bytes of data but the file has 3"), "{e}");
        std::fs::write(&p, idx(&[3], &[1, 2, 30])).expect("write");
        let e = load_mnist(dir.path()).expect_err("bad label").to_string();
        assert!(e.contains("label 30"), "{e}");
        std::fs::write(&p, [0u8, 0, 0x0d, 1, 0, 0, 0, 0]).expect("write");
        let e = load_mnist(dir.path()).expect_err("float idx").to_string();
        assert!(e.contains("bad IDX magic"), "{e}");
        std::fs::write(&p, idx(&[2], &[1, 2])).expect("write");
        let e = load_mnist(dir.path()).expect_err("count mismatch").to_string();
        assert!(e.contains("3 images but 2 labels"), "{e}");
        let empty = tempfile::tempdir().expect("temp dir");
        assert!(!is_mnist_dir(empty.path()));
        let e = load_mnist(empty.path()).expect_err("no files").to_string();
        assert!(e.contains("MNIST folder"), "{e}");
    }

    fn digits_line(label: &str) -> String {
        let mut cells: Vec<String> = (0..64).map(|i| (i % 17).to_string()).collect();
        cells.push(label.to_owned());
        cells.join(",")
    }

    #[test]
    fn digits_csv_plain_and_gzipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!("{}\n\n{}\n", digits_line("3"), digits_line("9"));
        let plain = dir.path().join("d.csv");
        std::fs::write(&plain, &text).expect("write");
        let zipped = dir.path().join("d.csv.gz");
        std::fs::write(&zipped, gz(text.as_bytes())).expect("write");
        for path in [plain, zipped] {
            let d = load_digits_csv(&path).expect("loads");
            assert_eq!(d.x.size(), [2, 64]);
            assert_eq!(longs(&d.y), [3, 9]);
            let x = floats(&d.x);
            assert_eq!((x[0], x[16], x[17]), (0.0, 1.0, 0.0));
        }
    }

    #[test]
    fn digits_csv_errors_name_the_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.csv");
        let check = |text: String, expected: &str| {
            std::fs::write(&path, text).expect("write");
            let e = load_digits_csv(&path).expect_err(expected).to_string();
            assert!(e.contains(expected), "{e} should contain {expected}");
        };
        check(format!("{}\n1,2,3\n", digits_line("1")), "line 2: 3 columns; expected 65");
        check(digits_line("10"), "line 1: label 10 is not a digit");
        check(digits_line("x"), "label `x` is not a number");
        check(digits_line("1").replacen("0,", "17,", 1), "pixel 17 is outside");
        check(String::new(), "no examples");
        let e = load_digits_csv(dir.path().join("missing.csv")).expect_err("missing").to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn the_shipped_digits_data_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/digits.csv.gz");
        let d = load_digits_csv(path).expect("data/digits.csv.gz loads");
        assert_eq!(d.x.size(), [1797, 64]);
        assert_eq!(d.y.size(), [1797]);
    }
}
