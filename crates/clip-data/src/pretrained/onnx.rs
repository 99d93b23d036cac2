//! Just enough of ONNX to take the weights out of an exported model: the graph's nodes (which
//! tensor feeds which operator) and its initialisers (the weights), read with `prost` from the
//! protobuf messages of `onnx.proto`. Only the fields used here are declared; the rest are
//! skipped by the decoder.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::{bad, io, DataError};

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;

/// One operator: its type and the names of the tensors it reads and writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// A float32 weight: its shape and values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// An ONNX graph's operators, in order, and its float32 initialisers by name.
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub weights: HashMap<String, Weight>,
}

impl Graph {
    /// Read the graph of the ONNX file at `path`. Initialisers of other types (shape
    /// constants) are left out.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        Self::decode(&bytes).map_err(bad(path))
    }

    /// Decode the bytes of an ONNX file; the error says what is wrong, not where.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let model = ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
        let graph = model.graph.ok_or("not an ONNX model: no graph")?;
        let nodes = graph
            .node
            .into_iter()
            .map(|n| Node {
                op: n.op_type,
                inputs: n.input,
                outputs: n.output,
            })
            .collect();
        let mut weights = HashMap::new();
        for t in graph.initializer {
            if t.data_type != FLOAT {
                continue;
            }
            let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            let n: usize = dims.iter().product();
            let data = if !t.raw_data.is_empty() {
                if t.raw_data.len() != 4 * n {
                    return Err(format!(
                        "initialiser {}: {} bytes for shape {dims:?}",
                        t.name,
                        t.raw_data.len()
                    ));
                }
                t.raw_data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            } else {
                t.float_data
            };
            if data.len() != n {
                return Err(format!(
                    "initialiser {}: {} values for shape {dims:?}",
                    t.name,
                    data.len()
                ));
            }
            weights.insert(t.name, Weight { dims, data });
        }
        Ok(Self { nodes, weights })
    }

    /// The operators that read tensor `name`.
    pub fn consumers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.inputs.iter().any(|i| i == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialisers_and_nodes_round_trip() {
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    input: vec!["x".into(), "w".into()],
                    output: vec!["y".into()],
                    name: "mm".into(),
                    op_type: "MatMul".into(),
                }],
                initializer: vec![
                    TensorProto {
                        dims: vec![2, 1],
                        data_type: FLOAT,
                        float_data: vec![],
                        name: "w".into(),
                        raw_data: [1.5f32, -2.0]
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect(),
                    },
                    TensorProto {
                        dims: vec![1],
                        data_type: 7, // int64: a shape constant, left out
                        float_data: vec![],
                        name: "shape".into(),
                        raw_data: vec![0; 8],
                    },
                ],
            }),
        };
        let g = Graph::decode(&model.encode_to_vec()).unwrap();
        assert_eq!(g.weights["w"].data, vec![1.5, -2.0]);
        assert_eq!(g.weights["w"].dims, vec![2, 1]);
        assert!(!g.weights.contains_key("shape"));
        assert_eq!(g.consumers("w").next().unwrap().op, "MatMul");
        let err = Graph::decode(b"\x07not onnx").unwrap_err();
        assert!(err.contains("not an ONNX model"), "{err}");
    }
}
