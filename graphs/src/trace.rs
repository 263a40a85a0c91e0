//! Trace backend: runs a network symbolically and records the typed graph IR.
//!
//! Every value carries its shape (batch symbolic) and dtype, so shape errors surface at trace
//! time with the op that caused them. Parameters become named initializers, recorded once by
//! name however many times a sampler step reuses them; constants and reshape targets are
//! deduplicated by value.

use crate::error::{shape_err, GraphError, Result};
use crate::ir::{DType, Dim, Graph, Initializer, Node, Op, TensorData, ValueInfo};
use crate::ops::{BinaryOp, Init, Ops, UnaryOp};
use candle_nn::VarBuilder;
use std::cell::RefCell;
use std::collections::HashMap;

/// A traced value: the name of the IR value plus its static type.
#[derive(Debug, Clone, PartialEq)]
pub struct Traced {
    pub name: String,
    pub shape: Vec<Dim>,
    pub dtype: DType,
}

#[derive(Default)]
struct State {
    graph: Graph,
    params: HashMap<String, Traced>,
    constants: HashMap<(Vec<usize>, Vec<u32>), String>,
    shapes: HashMap<Vec<i64>, String>,
    scope: Vec<String>,
    counters: HashMap<String, usize>,
}

pub struct TraceOps {
    vb: VarBuilder<'static>,
    state: RefCell<State>,
}

impl TraceOps {
    /// `vb` supplies the parameter values that become initializers.
    pub fn new(vb: VarBuilder<'static>, graph_name: &str) -> Self {
        let state = State {
            graph: Graph {
                name: graph_name.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        Self {
            vb,
            state: RefCell::new(state),
        }
    }

    /// Declare a graph input.
    pub fn input(&self, name: &str, dtype: DType, shape: Vec<Dim>) -> Traced {
        let v = Traced {
            name: name.to_string(),
            shape: shape.clone(),
            dtype,
        };
        self.state.borrow_mut().graph.inputs.push(ValueInfo {
            name: name.to_string(),
            dtype,
            shape,
        });
        v
    }

    /// Close the trace: the given values become the named graph outputs.
    pub fn finish(self, outputs: &[(&str, &Traced)]) -> Result<Graph> {
        let mut st = self.state.into_inner();
        for (out_name, v) in outputs {
            let taken = st.graph.inputs.iter().any(|i| i.name == *out_name)
                || st.graph.initializers.iter().any(|i| i.name == *out_name)
                || st
                    .graph
                    .nodes
                    .iter()
                    .any(|n| n.outputs.iter().any(|o| o == out_name));
            if taken {
                return Err(GraphError::Invalid(format!(
                    "output name `{out_name}` is already a value in the graph"
                )));
            }
            let produced = st.graph.nodes.iter().any(|n| n.outputs.contains(&v.name));
            let is_output_already = st.graph.outputs.iter().any(|o| o.name == v.name);
            if produced && !is_output_already {
                // rename the producing value everywhere so the graph has no trailing Identity
                for n in st.graph.nodes.iter_mut() {
                    for s in n.outputs.iter_mut().chain(n.inputs.iter_mut()) {
                        if *s == v.name {
                            *s = out_name.to_string();
                        }
                    }
                }
                st.graph.value_info.retain(|vi| vi.name != v.name);
            } else {
                st.graph.nodes.push(Node {
                    name: format!("output/{out_name}"),
                    op: Op::Identity,
                    inputs: vec![v.name.clone()],
                    outputs: vec![out_name.to_string()],
                });
            }
            st.graph.outputs.push(ValueInfo {
                name: out_name.to_string(),
                dtype: v.dtype,
                shape: v.shape.clone(),
            });
        }
        // drop initializers no node reads (a constant the network made but did not use, e.g.
        // the timestep of a one-step generator that ignores it)
        let used: std::collections::HashSet<&String> = st
            .graph
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter())
            .collect();
        let keep: Vec<bool> = st
            .graph
            .initializers
            .iter()
            .map(|i| used.contains(&i.name) || st.graph.outputs.iter().any(|o| o.name == i.name))
            .collect();
        let mut k = keep.into_iter();
        st.graph.initializers.retain(|_| k.next().unwrap());
        Ok(st.graph)
    }

    fn node(&self, op: Op, inputs: Vec<String>, shape: Vec<Dim>, dtype: DType) -> Traced {
        let mut st = self.state.borrow_mut();
        let scope = st.scope.join("/");
        let key = format!("{scope}/{}", op.onnx_name());
        let n = st.counters.entry(key).or_insert(0);
        let name = if scope.is_empty() {
            format!("{}_{}", op.onnx_name(), n)
        } else {
            format!("{scope}/{}_{}", op.onnx_name(), n)
        };
        *n += 1;
        st.graph.nodes.push(Node {
            name: name.clone(),
            op,
            inputs,
            outputs: vec![name.clone()],
        });
        st.graph.value_info.push(ValueInfo {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
        });
        Traced { name, shape, dtype }
    }

    fn initializer(&self, name: String, dims: Vec<usize>, data: TensorData) -> Traced {
        let dtype = match data {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I64(_) => DType::I64,
        };
        let shape = dims.iter().map(|&d| Dim::Known(d)).collect();
        self.state
            .borrow_mut()
            .graph
            .initializers
            .push(Initializer {
                name: name.clone(),
                dims,
                data,
            });
        Traced { name, shape, dtype }
    }

    fn shape_const(&self, spec: &[i64]) -> String {
        if let Some(n) = self.state.borrow().shapes.get(spec) {
            return n.clone();
        }
        let name = format!("shape.{}", self.state.borrow().shapes.len());
        self.initializer(
            name.clone(),
            vec![spec.len()],
            TensorData::I64(spec.to_vec()),
        );
        self.state
            .borrow_mut()
            .shapes
            .insert(spec.to_vec(), name.clone());
        name
    }

    fn scalar(&self, v: f32) -> Traced {
        self.constant(&[v], &[]).expect("scalar constant")
    }
}

fn float_only(op: &'static str, x: &Traced) -> Result<()> {
    if x.dtype != DType::F32 {
        return shape_err(op, format!("expects float32, got {:?}", x.dtype));
    }
    Ok(())
}

/// Numpy broadcasting of two symbolic shapes.
pub fn broadcast_shapes(op: &'static str, a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            Dim::Known(1)
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            Dim::Known(1)
        };
        out.push(match (da, db) {
            (x, Dim::Known(1)) => x,
            (Dim::Known(1), y) => y,
            (x, y) if x == y => x,
            _ => return shape_err(op, format!("cannot broadcast {a:?} with {b:?}")),
        });
    }
    Ok(out)
}

impl Ops for TraceOps {
    type T = Traced;

    fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Traced> {
        if let Some(t) = self.state.borrow().params.get(name) {
            return Ok(t.clone());
        }
        let t = self
            .vb
            .get_with_hints(shape, name, init)
            .map_err(|e| GraphError::Param {
                name: name.to_string(),
                msg: e.to_string(),
            })?;
        let data = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        if data.iter().any(|v| !v.is_finite()) {
            return Err(GraphError::Param {
                name: name.to_string(),
                msg: "contains NaN or Inf".into(),
            });
        }
        let v = self.initializer(name.to_string(), shape.to_vec(), TensorData::F32(data));
        self.state
            .borrow_mut()
            .params
            .insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn constant(&self, values: &[f32], shape: &[usize]) -> Result<Traced> {
        if values.len() != shape.iter().product::<usize>() {
            return shape_err(
                "constant",
                format!("{} values for shape {shape:?}", values.len()),
            );
        }
        let key = (shape.to_vec(), values.iter().map(|v| v.to_bits()).collect());
        if let Some(n) = self.state.borrow().constants.get(&key) {
            return Ok(Traced {
                name: n.clone(),
                shape: shape.iter().map(|&d| Dim::Known(d)).collect(),
                dtype: DType::F32,
            });
        }
        let name = format!("const.{}", self.state.borrow().constants.len());
        let v = self.initializer(
            name.clone(),
            shape.to_vec(),
            TensorData::F32(values.to_vec()),
        );
        self.state.borrow_mut().constants.insert(key, name);
        Ok(v)
    }

    fn shape(&self, x: &Traced) -> Vec<Dim> {
        x.shape.clone()
    }

    fn conv2d(
        &self,
        x: &Traced,
        w: &Traced,
        b: Option<&Traced>,
        stride: usize,
        padding: usize,
    ) -> Result<Traced> {
        float_only("conv2d", x)?;
        let (xs, ws) = (&x.shape, &w.shape);
        if xs.len() != 4 || ws.len() != 4 {
            return shape_err("conv2d", format!("x {xs:?}, w {ws:?}"));
        }
        let k = ws[2].known().unwrap_or(0);
        let spatial = |d: Dim| -> Result<Dim> {
            match d.known() {
                Some(n) if n + 2 * padding >= k => {
                    Ok(Dim::Known((n + 2 * padding - k) / stride + 1))
                }
                _ => shape_err(
                    "conv2d",
                    format!("spatial dim {d:?} too small for kernel {k}"),
                ),
            }
        };
        if xs[1] != ws[1] {
            return shape_err(
                "conv2d",
                format!("input channels {} vs weight {}", xs[1], ws[1]),
            );
        }
        let shape = vec![xs[0], ws[0], spatial(xs[2])?, spatial(xs[3])?];
        let mut inputs = vec![x.name.clone(), w.name.clone()];
        if let Some(b) = b {
            inputs.push(b.name.clone());
        }
        Ok(self.node(
            Op::Conv {
                strides: [stride, stride],
                pads: [padding; 4],
            },
            inputs,
            shape,
            DType::F32,
        ))
    }

    fn linear(&self, x: &Traced, w: &Traced, b: Option<&Traced>) -> Result<Traced> {
        float_only("linear", x)?;
        let (out_f, in_f) = match (w.shape.first(), w.shape.get(1)) {
            (Some(&o), Some(&i)) => (o, i),
            _ => return shape_err("linear", format!("weight {:?}", w.shape)),
        };
        if x.shape.last() != Some(&in_f) {
            return shape_err("linear", format!("x {:?} vs weight {:?}", x.shape, w.shape));
        }
        let mut shape = x.shape.clone();
        *shape.last_mut().unwrap() = out_f;
        if x.shape.len() == 2 {
            // Gemm keeps rank-2 linears one node, which every runtime fuses well.
            let mut inputs = vec![x.name.clone(), w.name.clone()];
            if let Some(b) = b {
                inputs.push(b.name.clone());
            }
            return Ok(self.node(Op::Gemm { trans_b: true }, inputs, shape, DType::F32));
        }
        let wt = self.node(
            Op::Transpose { perm: vec![1, 0] },
            vec![w.name.clone()],
            vec![in_f, out_f],
            DType::F32,
        );
        let y = self.node(
            Op::MatMul,
            vec![x.name.clone(), wt.name],
            shape.clone(),
            DType::F32,
        );
        match b {
            Some(b) => Ok(self.node(Op::Add, vec![y.name, b.name.clone()], shape, DType::F32)),
            None => Ok(y),
        }
    }

    fn matmul(&self, a: &Traced, b: &Traced) -> Result<Traced> {
        let (ra, rb) = (a.shape.len(), b.shape.len());
        if ra < 2 || rb < 2 || a.shape[ra - 1] != b.shape[rb - 2] {
            return shape_err("matmul", format!("{:?} @ {:?}", a.shape, b.shape));
        }
        let mut shape = broadcast_shapes("matmul", &a.shape[..ra - 2], &b.shape[..rb - 2])?;
        shape.push(a.shape[ra - 2]);
        shape.push(b.shape[rb - 1]);
        Ok(self.node(
            Op::MatMul,
            vec![a.name.clone(), b.name.clone()],
            shape,
            DType::F32,
        ))
    }

    fn binary(&self, op: BinaryOp, a: &Traced, b: &Traced) -> Result<Traced> {
        let (op, label) = match op {
            BinaryOp::Add => (Op::Add, "add"),
            BinaryOp::Sub => (Op::Sub, "sub"),
            BinaryOp::Mul => (Op::Mul, "mul"),
            BinaryOp::Div => (Op::Div, "div"),
        };
        if a.dtype != b.dtype {
            return shape_err(label, format!("dtypes {:?} and {:?}", a.dtype, b.dtype));
        }
        let shape = broadcast_shapes(label, &a.shape, &b.shape)?;
        Ok(self.node(op, vec![a.name.clone(), b.name.clone()], shape, a.dtype))
    }

    fn unary(&self, op: UnaryOp, x: &Traced) -> Result<Traced> {
        float_only("unary", x)?;
        let op = match op {
            UnaryOp::Sigmoid => Op::Sigmoid,
            UnaryOp::Sin => Op::Sin,
            UnaryOp::Cos => Op::Cos,
            UnaryOp::Exp => Op::Exp,
            UnaryOp::Sqrt => Op::Sqrt,
            UnaryOp::Neg => Op::Neg,
            UnaryOp::Erf => Op::Erf,
        };
        Ok(self.node(op, vec![x.name.clone()], x.shape.clone(), DType::F32))
    }

    fn affine(&self, x: &Traced, mul: f32, add: f32) -> Result<Traced> {
        float_only("affine", x)?;
        let mut y = x.clone();
        if mul != 1.0 {
            let c = self.scalar(mul);
            y = self.node(Op::Mul, vec![y.name, c.name], x.shape.clone(), DType::F32);
        }
        if add != 0.0 {
            let c = self.scalar(add);
            y = self.node(Op::Add, vec![y.name, c.name], x.shape.clone(), DType::F32);
        }
        Ok(y)
    }

    fn softmax_last_dim(&self, x: &Traced) -> Result<Traced> {
        float_only("softmax", x)?;
        Ok(self.node(
            Op::Softmax { axis: -1 },
            vec![x.name.clone()],
            x.shape.clone(),
            DType::F32,
        ))
    }

    fn mean_keepdim(&self, x: &Traced, axis: usize) -> Result<Traced> {
        if axis >= x.shape.len() {
            return shape_err("mean", format!("axis {axis} of {:?}", x.shape));
        }
        let mut shape = x.shape.clone();
        shape[axis] = Dim::Known(1);
        Ok(self.node(
            Op::ReduceMean {
                axes: vec![axis as i64],
                keepdims: true,
            },
            vec![x.name.clone()],
            shape,
            x.dtype,
        ))
    }

    fn reshape(&self, x: &Traced, spec: &[i64]) -> Result<Traced> {
        let shape = symbolic_reshape(&x.shape, spec)?;
        let s = self.shape_const(spec);
        Ok(self.node(Op::Reshape, vec![x.name.clone(), s], shape, x.dtype))
    }

    fn transpose(&self, x: &Traced, perm: &[usize]) -> Result<Traced> {
        let mut seen = vec![false; x.shape.len()];
        if perm.len() != x.shape.len()
            || perm
                .iter()
                .any(|&p| p >= seen.len() || std::mem::replace(&mut seen[p], true))
        {
            return shape_err("transpose", format!("perm {perm:?} for {:?}", x.shape));
        }
        let shape = perm.iter().map(|&p| x.shape[p]).collect();
        Ok(self.node(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            vec![x.name.clone()],
            shape,
            x.dtype,
        ))
    }

    fn concat(&self, xs: &[&Traced], axis: usize) -> Result<Traced> {
        let first = match xs.first() {
            Some(f) => f,
            None => return shape_err("concat", "no inputs"),
        };
        let mut shape = first.shape.clone();
        if axis >= shape.len() {
            return shape_err("concat", format!("axis {axis} of {shape:?}"));
        }
        let mut total = 0;
        for x in xs {
            if x.shape.len() != shape.len() || x.dtype != first.dtype {
                return shape_err("concat", format!("{:?} vs {:?}", x.shape, first.shape));
            }
            for (i, (a, b)) in x.shape.iter().zip(first.shape.iter()).enumerate() {
                if i != axis && a != b {
                    return shape_err("concat", format!("{:?} vs {:?}", x.shape, first.shape));
                }
            }
            match x.shape[axis].known() {
                Some(n) => total += n,
                None => return shape_err("concat", "cannot concatenate along the batch axis"),
            }
        }
        shape[axis] = Dim::Known(total);
        Ok(self.node(
            Op::Concat { axis: axis as i64 },
            xs.iter().map(|x| x.name.clone()).collect(),
            shape,
            first.dtype,
        ))
    }

    fn embedding(&self, table: &Traced, ids: &Traced) -> Result<Traced> {
        if ids.dtype != DType::I64 || table.shape.len() != 2 {
            return shape_err(
                "embedding",
                format!("table {:?}, ids {:?}", table.shape, ids.dtype),
            );
        }
        let mut shape = ids.shape.clone();
        shape.push(table.shape[1]);
        Ok(self.node(
            Op::Gather { axis: 0 },
            vec![table.name.clone(), ids.name.clone()],
            shape,
            DType::F32,
        ))
    }

    fn clamp(&self, x: &Traced, min: f32, max: f32) -> Result<Traced> {
        let lo = self.scalar(min);
        let hi = self.scalar(max);
        Ok(self.node(
            Op::Clip,
            vec![x.name.clone(), lo.name, hi.name],
            x.shape.clone(),
            x.dtype,
        ))
    }

    fn pad2d(&self, x: &Traced, pads: [usize; 4]) -> Result<Traced> {
        let r = x.shape.len();
        if r < 2 {
            return shape_err("pad2d", "needs rank >= 2");
        }
        let mut shape = x.shape.clone();
        let grow = |d: Dim, by: usize| d.known().map(|n| Dim::Known(n + by));
        shape[r - 2] = grow(shape[r - 2], pads[0] + pads[1])
            .ok_or_else(|| GraphError::Invalid("pad2d on batch axis".into()))?;
        shape[r - 1] = grow(shape[r - 1], pads[2] + pads[3])
            .ok_or_else(|| GraphError::Invalid("pad2d on batch axis".into()))?;
        let mut onnx_pads = vec![0i64; 2 * r];
        onnx_pads[r - 2] = pads[0] as i64;
        onnx_pads[r - 1] = pads[2] as i64;
        onnx_pads[2 * r - 2] = pads[1] as i64;
        onnx_pads[2 * r - 1] = pads[3] as i64;
        let p = self.shape_const(&onnx_pads);
        Ok(self.node(Op::Pad, vec![x.name.clone(), p], shape, x.dtype))
    }

    fn scoped<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        self.state.borrow_mut().scope.push(name.to_string());
        let r = f();
        self.state.borrow_mut().scope.pop();
        r
    }
}

/// Output shape of an ONNX reshape when the input may hold the symbolic batch.
pub fn symbolic_reshape(input: &[Dim], spec: &[i64]) -> Result<Vec<Dim>> {
    let known_in: usize = input.iter().filter_map(|d| d.known()).product();
    let batch_in = input.iter().filter(|d| **d == Dim::Batch).count();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    let mut batch_copied = 0;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 => match input.get(i) {
                Some(&d) => {
                    if d == Dim::Batch {
                        batch_copied += 1;
                    }
                    out.push(d)
                }
                None => return shape_err("reshape", format!("0 at axis {i} beyond input rank")),
            },
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(Dim::Known(1));
            }
            s if s > 0 => out.push(Dim::Known(s as usize)),
            s => return shape_err("reshape", format!("invalid dimension {s} in {spec:?}")),
        }
    }
    let known_out: usize = out.iter().filter_map(|d| d.known()).product();
    let batch_left = batch_in - batch_copied.min(batch_in);
    match (infer, batch_left) {
        (Some(i), 0) => {
            if known_out == 0 || !known_in.is_multiple_of(known_out) {
                return shape_err("reshape", format!("cannot infer -1: {input:?} -> {spec:?}"));
            }
            out[i] = Dim::Known(known_in / known_out);
        }
        (Some(i), 1) => {
            if known_in != known_out {
                return shape_err(
                    "reshape",
                    format!("batch would merge with other axes: {input:?} -> {spec:?}"),
                );
            }
            out[i] = Dim::Batch;
        }
        (None, 0) if known_in == known_out => {}
        _ => {
            return shape_err(
                "reshape",
                format!("element count differs: {input:?} -> {spec:?}"),
            )
        }
    }
    Ok(out)
}
