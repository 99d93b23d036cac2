//! Just enough of Python's pickle machine to read NumPy arrays out of a protocol-2 pickle
//! (MNIST's `mnist.pkl.gz`: a tuple of (images, labels) pairs written by Python 2). Only
//! the opcodes such files use are known; any other is an error that names it and its offset,
//! so a file this cannot read is never misread. `GLOBAL` and `REDUCE` are not executed: the
//! only callables accepted are NumPy's `_reconstruct` and `dtype`, interpreted here.

use std::collections::HashMap;

/// A NumPy array: shape, dtype string (`<f4`, `<i8`, `|u1`, …), raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub data: Vec<u8>,
}

impl NdArray {
    /// The elements as f32 (`<f4`, `<f8`) — the array's own values, converted.
    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        match self.dtype.as_str() {
            "<f4" => Ok(self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            "<f8" => Ok(self
                .data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect()),
            d => Err(format!("expected a float array, found dtype {d}")),
        }
    }

    /// The elements as i64 (`<i8`, `<i4`, `|u1`, `|i1`).
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        match self.dtype.as_str() {
            "<i8" => Ok(self
                .data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()),
            "<i4" => Ok(self
                .data
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect()),
            "|u1" => Ok(self.data.iter().map(|&b| b as i64).collect()),
            "|i1" => Ok(self.data.iter().map(|&b| b as i8 as i64).collect()),
            d => Err(format!("expected an integer array, found dtype {d}")),
        }
    }
}

/// A value on the pickle machine's stack.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    Global(String, String),
    /// `numpy.dtype(name, …)` before its `BUILD` sets the byte order.
    Dtype(String),
    Array(NdArray),
    Mark,
}

impl Value {
    pub fn tuple(self) -> Result<Vec<Value>, String> {
        match self {
            Value::Tuple(v) => Ok(v),
            v => Err(format!("expected a tuple, found {}", v.kind())),
        }
    }

    pub fn array(self) -> Result<NdArray, String> {
        match self {
            Value::Array(a) => Ok(a),
            v => Err(format!("expected a NumPy array, found {}", v.kind())),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Bytes(_) => "a string",
            Value::Tuple(_) => "a tuple",
            Value::Global(..) => "a global",
            Value::Dtype(_) => "a dtype",
            Value::Array(_) => "an array",
            Value::Mark => "a mark",
        }
    }
}

/// Run the pickle in `bytes` and return the object it builds.
pub fn load(bytes: &[u8]) -> Result<Value, String> {
    let mut m = Machine {
        bytes,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    m.run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("unterminated line at byte {}", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| format!("stack empty at byte {}", self.pos))
    }

    /// Everything above the topmost mark, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or_else(|| format!("no mark on the stack at byte {}", self.pos))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Result<Value, String> {
        self.stack
            .last()
            .cloned()
            .ok_or_else(|| format!("stack empty at byte {}", self.pos))
    }

    /// The interpreter loop: one arm per opcode of the subset, so the whole machine reads
    /// in one place (as CPython's `load` dispatch does); longer than 80 lines for that reason.
    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 2 {
                        return Err(format!("pickle protocol {proto}; this reader knows 0–2"));
                    }
                }
                b'.' => return self.pop(),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    let v = self.top()?;
                    self.memo.insert(k, v);
                }
                b'r' => {
                    let k = self.u32()?;
                    let v = self.top()?;
                    self.memo.insert(k, v);
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        self.u8()? as u32
                    } else {
                        self.u32()?
                    };
                    let v = self
                        .memo
                        .get(&k)
                        .cloned()
                        .ok_or_else(|| format!("memo key {k} unset at byte {at}"))?;
                    self.stack.push(v);
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.stack.push(Value::Int(v));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(s));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let s = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(s));
                }
                b'(' => self.stack.push(Value::Mark),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(format!("TUPLE{n} on a short stack at byte {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'R' => {
                    let args = self.pop()?.tuple()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args).map_err(|e| format!("byte {at}: {e}"))?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    let v = build(obj, state).map_err(|e| format!("byte {at}: {e}"))?;
                    self.stack.push(v);
                }
                op => {
                    return Err(format!(
                        "opcode {:?} (0x{op:02x}) at byte {at} is not one this NumPy-array reader knows",
                        op as char
                    ))
                }
            }
        }
    }
}

/// `callable(*args)` for the two callables an ndarray pickle uses.
fn reduce(callable: Value, args: Vec<Value>) -> Result<Value, String> {
    match callable {
        Value::Global(m, n) if m.starts_with("numpy") && n == "_reconstruct" => {
            // _reconstruct(ndarray, (0,), b'b'): an empty array that BUILD fills.
            Ok(Value::Array(NdArray {
                shape: Vec::new(),
                dtype: String::new(),
                data: Vec::new(),
            }))
        }
        // dtype("f4", 0, 1): little-endian ("|" for one byte) unless its BUILD says otherwise.
        // Python mutates the object in place, so a memoised copy must be right before BUILD.
        Value::Global(m, n) if m == "numpy" && n == "dtype" => match args.first() {
            Some(Value::Bytes(name)) => {
                let name = String::from_utf8_lossy(name).to_string();
                let order = if name.ends_with('1') { "|" } else { "<" };
                Ok(Value::Dtype(format!("{order}{name}")))
            }
            _ => Err("numpy.dtype without a name".into()),
        },
        Value::Global(m, n) => Err(format!("will not call {m}.{n}")),
        v => Err(format!("REDUCE on {}", v.kind())),
    }
}

/// `obj.__setstate__(state)` for dtypes and arrays.
fn build(obj: Value, state: Value) -> Result<Value, String> {
    match obj {
        // (version, byte order, subarray, names, fields, elsize, alignment, flags)
        Value::Dtype(dtype) => {
            let order = match state.tuple()?.get(1) {
                Some(Value::Bytes(o)) => String::from_utf8_lossy(o).to_string(),
                _ => return Err("dtype state without a byte order".into()),
            };
            match order.as_str() {
                "<" | "|" => Ok(Value::Dtype(dtype)),
                "=" if cfg!(target_endian = "little") => Ok(Value::Dtype(dtype)),
                o => Err(format!(
                    "dtype {dtype} with byte order {o:?} is not supported"
                )),
            }
        }
        // (version, shape, dtype, is_fortran, raw bytes)
        Value::Array(_) => {
            let s = state.tuple()?;
            let [_, Value::Tuple(shape), Value::Dtype(dtype), Value::Bool(fortran), Value::Bytes(data)] =
                &s[..]
            else {
                return Err("array state is not (version, shape, dtype, fortran, bytes)".into());
            };
            if *fortran {
                return Err("Fortran-ordered arrays are not supported".into());
            }
            let shape: Vec<usize> = shape
                .iter()
                .map(|d| match d {
                    Value::Int(n) if *n >= 0 => Ok(*n as usize),
                    _ => Err("array shape holds a non-integer".to_string()),
                })
                .collect::<Result<_, _>>()?;
            let width: usize = dtype
                .get(2..)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("dtype {dtype:?}"))?;
            let bytes = shape.iter().try_fold(width, |acc, &d| acc.checked_mul(d));
            if bytes != Some(data.len()) {
                return Err(format!(
                    "array of shape {shape:?} and dtype {dtype} holds {} bytes",
                    data.len()
                ));
            }
            Ok(Value::Array(NdArray {
                shape,
                dtype: dtype.clone(),
                data: data.clone(),
            }))
        }
        v => Err(format!("BUILD on {}", v.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The opcodes of Python 2's `cPickle.dump(((x, y),), f, 2)` for x = float32 [[0.5, 1],
    /// [0.25, 0]] and y = int64 [3, 7], as in MNIST's file; `scripts/numpy_pickle_fixture.py`
    /// writes it and checks that Python's own pickle + NumPy load it as those arrays.
    const FIXTURE: &[u8] = include_bytes!("../../../../tests/fixtures/numpy_protocol2.pkl");

    #[test]
    fn reads_numpy_arrays_written_by_numpy() {
        let v = load(FIXTURE).unwrap().tuple().unwrap();
        let pair = v.into_iter().next().unwrap().tuple().unwrap();
        let mut it = pair.into_iter();
        let x = it.next().unwrap().array().unwrap();
        let y = it.next().unwrap().array().unwrap();
        assert_eq!(x.shape, vec![2, 2]);
        assert_eq!(x.to_f32().unwrap(), vec![0.5, 1.0, 0.25, 0.0]);
        assert_eq!(y.shape, vec![2]);
        assert_eq!(y.to_i64().unwrap(), vec![3, 7]);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        // protocol 4 header
        assert!(load(&[0x80, 4]).unwrap_err().contains("protocol 4"));
        // GLOBAL os.system, then REDUCE
        let evil = b"\x80\x02cos\nsystem\nU\x02ls\x85R.";
        assert!(load(evil).unwrap_err().contains("will not call os.system"));
        // an opcode outside the subset (FRAME)
        assert!(load(&[0x80, 2, 0x95]).unwrap_err().contains("0x95"));
        // truncated string
        assert!(load(b"\x80\x02U\x09abc").unwrap_err().contains("truncated"));
    }

    /// Every array the value holds, read whole (what a caller would do with it).
    fn read_all(v: Value) {
        match v.clone().tuple() {
            Ok(items) => items.into_iter().for_each(read_all),
            Err(_) => {
                if let Ok(a) = v.array() {
                    let _ = (a.to_f32(), a.to_i64());
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config({
            let mut c = proptest::prelude::ProptestConfig {
                failure_persistence: None,
                ..Default::default()
            };
            if std::env::var_os("PROPTEST_CASES").is_none() {
                c.cases = 500;
            }
            if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
                c.rng_seed = proptest::test_runner::RngSeed::Fixed(0xc11f);
            }
            c
        })]

        /// Damaged pickles load or are refused with a message; never a panic.
        #[test]
        fn mutated_pickles_load_or_fail_cleanly(
            edits in proptest::collection::vec((0usize..FIXTURE.len(), proptest::prelude::any::<u8>()), 0..6),
            cut in 0usize..=FIXTURE.len(),
        ) {
            let mut bytes = FIXTURE.to_vec();
            for (i, b) in edits {
                bytes[i] = b;
            }
            bytes.truncate(cut.max(1));
            match load(&bytes) {
                Ok(v) => read_all(v),
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
        }

        #[test]
        fn random_bytes_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = load(&bytes).map(read_all);
        }
    }
}
