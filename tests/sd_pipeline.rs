//! The components of a Stable-Diffusion pipeline folder (CLIP tokenizer, text encoder,
//! UNet2DConditionModel) against what transformers and diffusers computed from the same folder
//! (fixtures/diffusers_sd, see its README).

mod common;
use candle_core::{Device, Tensor};
use flashctl::sd::clip_tokenizer::ClipTokenizer;
use flashctl::sd::text_encoder::{parse_config, TextEncoder};

/// The pipelines computed by diffusers (fixtures/diffusers_sd/README.md): the SD 1.x layout and
/// an SD 2.x-like one (linear projections, per-level heads, 2 transformer layers, upcast
/// attention, v-prediction, trailing spacing, gelu text encoder, 3 VAE levels, scaling 0.13025).
/// A third one has a guidance-embedded UNet (`time_cond_proj_dim`: the pipeline feeds the
/// embedding of w - 1 and runs no classifier-free guidance).
const CASES: &[&str] = &["sd_tiny_eps", "sd_tiny_v_linear", "sd_tiny_time_cond"];

/// A symbolic batch and the rest of `t`'s dims as known.
fn known_batch_dims(t: &Tensor) -> Vec<flashctl_graphs::Dim> {
    let mut d = vec![flashctl_graphs::Dim::Batch];
    d.extend(
        t.dims()[1..]
            .iter()
            .map(|&n| flashctl_graphs::Dim::Known(n)),
    );
    d
}

fn case_dir(name: &str) -> std::path::PathBuf {
    common::fixture(&format!("diffusers_sd/{name}"))
}

/// The SD 1.x case (the refusal tests edit its configs).
fn pipeline() -> std::path::PathBuf {
    case_dir(CASES[0])
}

fn case_prompts(dir: &std::path::Path) -> (Vec<String>, String) {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let prompts = case["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    (
        prompts,
        case["negative_prompt"].as_str().unwrap().to_string(),
    )
}

fn ids_rows(t: &Tensor) -> Vec<Vec<i64>> {
    t.to_vec2::<i64>().unwrap()
}

#[test]
fn tokenizer_from_either_file_set_gives_transformers_ids() {
    for name in CASES {
        let pipeline = || case_dir(name);
        let io = common::load(&pipeline().join("io.safetensors"));
        let (prompts, negative) = case_prompts(&pipeline());
        let dir = pipeline().join("tokenizer");
        let from_json = ClipTokenizer::from_dir(&dir).unwrap();
        assert_eq!(from_json.source, "tokenizer.json");
        let from_bpe = ClipTokenizer::from_vocab_merges(
            &dir.join("vocab.json"),
            &dir.join("merges.txt"),
            &dir,
        )
        .unwrap();
        let want = ids_rows(&io["input_ids"]);
        let want_neg = ids_rows(&io["negative_input_ids"]);
        for tok in [&from_json, &from_bpe] {
            for (p, w) in prompts.iter().zip(&want) {
                let e = tok.encode(p).unwrap();
                assert_eq!(&e.ids, w, "{} on {p:?}", tok.source);
                assert!(!e.truncated);
            }
            assert_eq!(
                tok.encode(&negative).unwrap().ids,
                want_neg[0],
                "{}",
                tok.source
            );
        }
    }
}

#[test]
fn long_prompts_are_truncated_to_the_length_and_say_so() {
    let tok = ClipTokenizer::from_dir(&pipeline().join("tokenizer")).unwrap();
    let long = "a photo of a sneaker ".repeat(40);
    let e = tok.encode(&long).unwrap();
    assert_eq!(e.ids.len(), tok.max_len);
    assert!(e.truncated);
    // bos first, eos last: the body was cut, not the special tokens
    let short = tok.encode("a photo").unwrap();
    assert_eq!(e.ids[0], short.ids[0]);
    assert_eq!(e.ids[tok.max_len - 1], short.ids[3]);
}

#[test]
fn text_encoder_matches_transformers() {
    for name in CASES {
        let pipeline = || case_dir(name);
        let io = common::load(&pipeline().join("io.safetensors"));
        let enc = TextEncoder::load(&pipeline().join("text_encoder"), &Device::Cpu).unwrap();
        for (ids, want) in [
            ("input_ids", "prompt_embeds"),
            ("negative_input_ids", "negative_prompt_embeds"),
        ] {
            let got = enc.encode(&io[ids]).unwrap();
            let err = common::rel_err(&got, &io[want]);
            assert!(err < 1e-4, "{want}: relative error {err}");
        }
    }
}

#[test]
fn text_encoder_refuses_what_it_cannot_run_by_name() {
    let dir = pipeline().join("text_encoder");
    let base: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut m = base.clone();
        m.insert(k.into(), v);
        parse_config(&m).unwrap_err()
    };
    assert!(with("hidden_act", "relu".into()).contains("hidden_act `relu`"));
    assert!(with(
        "architectures",
        serde_json::json!(["CLIPTextModelWithProjection"])
    )
    .contains("CLIPTextModelWithProjection"));
    assert!(with("num_attention_heads", 5.into()).contains("not divisible"));
    let enc = TextEncoder::load(&dir, &Device::Cpu).unwrap();
    let short = Tensor::zeros((1, 10), candle_core::DType::I64, &Device::Cpu).unwrap();
    let e = enc.encode(&short).unwrap_err().to_string();
    assert!(e.contains("10 tokens") && e.contains("77"), "{e}");
    let big = Tensor::full(5000i64, (1, 77), &Device::Cpu).unwrap();
    let e = enc.encode(&big).unwrap_err().to_string();
    assert!(e.contains("5000") && e.contains("vocabulary"), "{e}");
}

#[test]
fn gelu_text_encoders_use_the_exact_erf_form() {
    // SD 2.x text encoders are `gelu`: x/2 (1 + erf(x/sqrt 2)); OpenAI CLIP's quick_gelu differs
    use flashctl::models::clip_text::{activation, ClipActivation};
    let ops = flashctl_graphs::EagerOps::new(candle_nn::VarBuilder::zeros(
        candle_core::DType::F32,
        &Device::Cpu,
    ));
    let x = Tensor::arange(-40i64, 40, &Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .affine(0.1, 0.0)
        .unwrap();
    let gelu = activation(&ops, ClipActivation::Gelu, &x).unwrap();
    assert!(common::rel_err(&gelu, &x.gelu_erf().unwrap()) < 1e-6);
    let quick = activation(&ops, ClipActivation::QuickGelu, &x).unwrap();
    let sig = candle_nn::ops::sigmoid(&x.affine(1.702, 0.0).unwrap()).unwrap();
    assert!(common::rel_err(&quick, &(&x * sig).unwrap()) < 1e-6);
    assert!(common::rel_err(&quick, &gelu) > 1e-3);
}

/// The same network traced into one ONNX graph (`input_ids` [batch, 77] int64 ->
/// `prompt_embeds`), run by tract and ONNX Runtime.
#[test]
fn traced_text_encoder_runs_in_every_runtime() {
    for name in CASES {
        let pipeline = || case_dir(name);
        use flashctl_graphs::{DType, Dim, TraceOps};
        use flashctl_validate::HostTensor;
        let io = common::load(&pipeline().join("io.safetensors"));
        let enc = TextEncoder::load(&pipeline().join("text_encoder"), &Device::Cpu).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(
            enc.weights().clone(),
            candle_core::DType::F32,
            &Device::Cpu,
        );
        let ops = TraceOps::new(vb, "text_encoder");
        let ids = ops.input("input_ids", DType::I64, vec![Dim::Batch, Dim::Known(77)]);
        let y = flashctl::models::clip_text::forward(&enc.config, &ops, &ids).unwrap();
        let graph = ops.finish(&[("prompt_embeds", &y)]).unwrap();
        let bytes = common::onnx_bytes(&graph);
        let want = common::vec(&io["prompt_embeds"]);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let ids: Vec<i64> = io["input_ids"].flatten_all().unwrap().to_vec1().unwrap();
        let inputs = [HostTensor::i64("input_ids", vec![2, 77], ids)];
        for rt in common::parity_runtimes() {
            let got = common::run_first_output(rt, &bytes, &inputs);
            let err = common::max_abs(&got, &want) / scale;
            assert!(err < 1e-4, "{rt}: relative error {err}");
        }
    }
}

fn unet_config(dir: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("unet/config.json")).unwrap()).unwrap()
}

#[test]
fn conditional_unet_matches_diffusers() {
    for name in CASES {
        let pipeline = || case_dir(name);
        use flashctl::diffusers::parse_unet_cond_config;
        use flashctl_graphs::EagerOps;
        let io = common::load(&pipeline().join("io.safetensors"));
        let cfg = parse_unet_cond_config(&unet_config(&pipeline())).unwrap();
        let weights = common::load(&pipeline().join("unet/diffusion_pytorch_model.safetensors"));
        let ops = EagerOps::new(candle_nn::VarBuilder::from_tensors(
            weights,
            candle_core::DType::F32,
            &Device::Cpu,
        ));
        let out = flashctl::models::unet::forward_with_context(
            &cfg,
            &ops,
            &io["x"],
            &io["t"],
            None,
            Some(&io["prompt_embeds"]),
        )
        .unwrap();
        let err = common::rel_err(&out, &io["denoiser_out"]);
        println!("UNet2DConditionModel: relative error {err:.3e}");
        assert!(err < 1e-4, "relative error {err}");
    }
}

#[test]
fn conditional_unet_config_refuses_what_it_cannot_run_by_name() {
    use flashctl::diffusers::parse_unet_cond_config;
    let with = |k: &str, v: serde_json::Value| {
        let mut m = unet_config(&pipeline());
        m.insert(k.into(), v);
        parse_unet_cond_config(&m).unwrap_err()
    };
    assert!(with("addition_embed_type", "text_time".into()).contains("addition_embed_type"));
    assert!(with("dual_cross_attention", true.into()).contains("dual_cross_attention"));
    assert!(with("attention_type", "gated".into()).contains("attention_type"));
    assert!(with("conv_in_kernel", 5.into()).contains("conv_in_kernel"));
    assert!(
        with("mid_block_type", "UNetMidBlock2DSimpleCrossAttn".into()).contains("mid_block_type")
    );
    assert!(with(
        "down_block_types",
        serde_json::json!(["DownBlock2D", "SimpleCrossAttnDownBlock2D"])
    )
    .contains("SimpleCrossAttnDownBlock2D"));
    assert!(
        with("attention_head_dim", serde_json::json!([8, 8, 8])).contains("one value per level")
    );
    assert!(with("attention_head_dim", 5.into()).contains("do not divide"));
    assert!(with("some_new_option", 1.into()).contains("some_new_option"));
}

/// One UNet2DConditionModel call traced into ONNX (`x`, `t`, `encoder_hidden_states`), run by
/// tract and ONNX Runtime against diffusers' output.
#[test]
fn traced_conditional_unet_runs_in_every_runtime() {
    for name in CASES {
        let pipeline = || case_dir(name);
        use flashctl::diffusers::parse_unet_cond_config;
        use flashctl_graphs::{DType, Dim, TraceOps};
        use flashctl_validate::HostTensor;
        let io = common::load(&pipeline().join("io.safetensors"));
        let cfg = parse_unet_cond_config(&unet_config(&pipeline())).unwrap();
        let weights = common::load(&pipeline().join("unet/diffusion_pytorch_model.safetensors"));
        let vb =
            candle_nn::VarBuilder::from_tensors(weights, candle_core::DType::F32, &Device::Cpu);
        let ops = TraceOps::new(vb, "unet");
        let x = ops.input("x", DType::F32, known_batch_dims(&io["x"]));
        let t = ops.input("t", DType::F32, vec![Dim::Batch]);
        let ctx = ops.input(
            "encoder_hidden_states",
            DType::F32,
            known_batch_dims(&io["prompt_embeds"]),
        );
        let y = flashctl::models::unet::forward_with_context(&cfg, &ops, &x, &t, None, Some(&ctx))
            .unwrap();
        let graph = ops.finish(&[("denoiser_out", &y)]).unwrap();
        let bytes = common::onnx_bytes(&graph);
        let host = |name: &str, key: &str| {
            HostTensor::f32(name, io[key].dims().to_vec(), common::vec(&io[key]))
        };
        let inputs = [
            host("x", "x"),
            host("t", "t"),
            host("encoder_hidden_states", "prompt_embeds"),
        ];
        let want = common::vec(&io["denoiser_out"]);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for rt in common::parity_runtimes() {
            let got = common::run_first_output(rt, &bytes, &inputs);
            let err = common::max_abs(&got, &want) / scale;
            println!("traced UNet2DConditionModel in {rt}: relative error {err:.3e}");
            assert!(err < 1e-4, "{rt}: relative error {err}");
        }
    }
}

fn vae(
    dir: &std::path::Path,
) -> (
    flashctl::models::vae::VaeConfig,
    candle_nn::VarBuilder<'static>,
) {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vae/config.json")).unwrap())
            .unwrap();
    let cfg = flashctl::sd::vae::parse_config(&map).unwrap();
    let weights = common::load(&dir.join("vae/diffusion_pytorch_model.safetensors"));
    let vb = candle_nn::VarBuilder::from_tensors(weights, candle_core::DType::F32, &Device::Cpu);
    (cfg, vb)
}

#[test]
fn vae_decode_and_encode_match_diffusers() {
    for name in CASES {
        let pipeline = || case_dir(name);
        use flashctl::models::vae;
        let io = common::load(&pipeline().join("io.safetensors"));
        let (cfg, vb) = vae(&pipeline());
        let ops = flashctl_graphs::EagerOps::new(vb);
        // the fixture decodes vae_latents / scaling_factor
        let z = (&io["vae_latents"] / cfg.scaling_factor as f64).unwrap();
        let image = vae::decode(&cfg, &ops, &z).unwrap();
        let err = common::rel_err(&image, &io["vae_decoded"]);
        println!("AutoencoderKL decode: relative error {err:.3e}");
        assert!(err < 1e-4, "decode: relative error {err}");
        let mean = vae::encode_mean(&cfg, &ops, &io["vae_image"]).unwrap();
        let err = common::rel_err(&mean, &io["vae_encoded_mean"]);
        println!("AutoencoderKL encode mean: relative error {err:.3e}");
        assert!(err < 1e-4, "encode: relative error {err}");
    }
}

#[test]
fn traced_vae_decoder_runs_in_every_runtime() {
    for name in CASES {
        let pipeline = || case_dir(name);
        use flashctl_graphs::{DType, TraceOps};
        use flashctl_validate::HostTensor;
        let io = common::load(&pipeline().join("io.safetensors"));
        let (cfg, vb) = vae(&pipeline());
        let ops = TraceOps::new(vb, "vae_decoder");
        let z = ops.input("latents", DType::F32, known_batch_dims(&io["vae_latents"]));
        let y = flashctl::models::vae::decode(&cfg, &ops, &z).unwrap();
        let bytes = common::onnx_bytes(&ops.finish(&[("image", &y)]).unwrap());
        let zin = (&io["vae_latents"] / cfg.scaling_factor as f64).unwrap();
        let inputs = [HostTensor::f32(
            "latents",
            zin.dims().to_vec(),
            common::vec(&zin),
        )];
        let want = common::vec(&io["vae_decoded"]);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for rt in common::parity_runtimes() {
            let got = common::run_first_output(rt, &bytes, &inputs);
            let err = common::max_abs(&got, &want) / scale;
            println!("traced AutoencoderKL decoder in {rt}: relative error {err:.3e}");
            assert!(err < 1e-4, "{rt}: relative error {err}");
        }
    }
}

#[test]
fn vae_config_refuses_what_it_cannot_run_by_name() {
    let base: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(pipeline().join("vae/config.json")).unwrap())
            .unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut m = base.clone();
        m.insert(k.into(), v);
        flashctl::sd::vae::parse_config(&m).unwrap_err()
    };
    assert!(with("latents_mean", serde_json::json!([0.0, 0.0, 0.0, 0.0])).contains("latents_mean"));
    assert!(with(
        "up_block_types",
        serde_json::json!(["UpDecoderBlock2D", "AttnUpDecoderBlock2D"])
    )
    .contains("AttnUpDecoderBlock2D"));
    assert!(with("_class_name", "AutoencoderTiny".into()).contains("AutoencoderTiny"));
    assert!(with("act_fn", "gelu".into()).contains("act_fn"));
    assert!(with("norm_num_groups", 5.into()).contains("not divisible"));
}

#[test]
fn pipeline_latents_and_image_match_diffusers() {
    for name in CASES {
        let pipeline = || case_dir(name);
        use flashctl::sd::pipeline::SdPipeline;
        let io = common::load(&pipeline().join("io.safetensors"));
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(pipeline().join("case.json")).unwrap())
                .unwrap();
        let steps = case["ddim_steps"].as_u64().unwrap() as usize;
        let w = case["guidance_scale"].as_f64().unwrap() as f32;
        let p = SdPipeline::load(&pipeline(), &Device::Cpu).unwrap();
        let plan = p.plan(steps).unwrap();
        let want_ts: Vec<usize> = common::vec(&io["ddim_timesteps"])
            .iter()
            .map(|&t| t as usize)
            .collect();
        assert_eq!(plan.timesteps, want_ts);
        // from the fixture's embeddings, and from ids through flashctl's own text encoder
        let ids_cond = p.encode_ids(&io["input_ids"]).unwrap();
        let ids_uncond = p.encode_ids(&io["negative_input_ids"]).unwrap();
        for (name, cond, uncond) in [
            (
                "embeddings",
                io["prompt_embeds"].clone(),
                io["negative_prompt_embeds"].clone(),
            ),
            ("ids", ids_cond, ids_uncond),
        ] {
            let (latents, image) = p
                .generate(&io["x_T"], &cond, Some(&uncond), w, steps)
                .unwrap();
            let el = common::rel_err(&latents, &io["pipeline_latents"]);
            let ei = common::rel_err(&image, &io["pipeline_image"]);
            println!("pipeline from {name}: latents {el:.3e}, image {ei:.3e}");
            assert!(el < 1e-3 && ei < 1e-3, "{name}: latents {el}, image {ei}");
        }
    }
}

#[test]
fn pipeline_folders_refuse_what_is_missing_or_unsupported_by_name() {
    use flashctl::sd::pipeline::SdPipeline;
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("pipe");
    let status = std::process::Command::new("cp")
        .args(["-r", pipeline().to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let err = |p: &std::path::Path| SdPipeline::load(p, &Device::Cpu).err().unwrap().to_string();
    // a pipeline class flashctl does not read
    let idx = copy.join("model_index.json");
    let text = std::fs::read_to_string(&idx).unwrap();
    std::fs::write(
        &idx,
        text.replace(
            "\"StableDiffusionPipeline\"",
            "\"StableDiffusionXLPipeline\"",
        ),
    )
    .unwrap();
    assert!(err(&copy).contains("StableDiffusionXLPipeline"));
    std::fs::write(&idx, &text).unwrap();
    // a missing component
    std::fs::rename(copy.join("vae"), copy.join("vae_gone")).unwrap();
    assert!(err(&copy).contains("missing component `vae/`"));
    std::fs::rename(copy.join("vae_gone"), copy.join("vae")).unwrap();
    // wrong embedding width
    let p = SdPipeline::load(&copy, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 4, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let bad = Tensor::zeros((1, 77, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = p.generate(&x, &bad, None, 1.0, 2).unwrap_err().to_string();
    assert!(e.contains("prompt_embeds") && e.contains("32"), "{e}");
}

/// `export --model PIPELINE`: one graph from `noise` and `input_ids` to the image; every runtime
/// on the fixture's x_T and ids gives diffusers' pipeline_image.
#[test]
fn exported_text_to_image_graph_gives_the_pipelines_image() {
    for name in CASES {
        let pipeline = || case_dir(name);
        use flashctl_validate::HostTensor;
        let io = common::load(&pipeline().join("io.safetensors"));
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(pipeline().join("case.json")).unwrap())
                .unwrap();
        let steps = case["ddim_steps"].as_u64().unwrap() as usize;
        let w = case["guidance_scale"].as_f64().unwrap() as f32;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("t2i/model.onnx");
        let r = flashctl::sd::export::export_pipeline(
            &pipeline(),
            Some(steps),
            w,
            Default::default(),
            &out,
        )
        .unwrap();
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&r.manifest_path).unwrap()).unwrap();
        assert_eq!(manifest["kind"], "text_to_image");
        assert_eq!(
            manifest["pipeline"]["guidance_scale"].as_f64().unwrap() as f32,
            w
        );
        let names = |k: &str| -> Vec<String> {
            manifest[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("inputs"), ["noise", "input_ids"]);
        assert_eq!(names("outputs"), ["image", "latents"]);
        // each weight once: the initializers are no larger than the parameters they come from
        assert!(
            r.initializer_bytes <= r.parameter_bytes,
            "{} > {}",
            r.initializer_bytes,
            r.parameter_bytes
        );
        let bytes = std::fs::read(&out).unwrap();
        let ids: Vec<i64> = io["input_ids"].flatten_all().unwrap().to_vec1().unwrap();
        let inputs = [
            HostTensor::f32("noise", io["x_T"].dims().to_vec(), common::vec(&io["x_T"])),
            HostTensor::i64("input_ids", vec![2, 77], ids),
        ];
        let want = common::vec(&io["pipeline_image"]);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for rt in common::parity_runtimes() {
            let got = common::run_first_output(rt, &bytes, &inputs);
            let err = common::max_abs(&got, &want) / scale;
            println!("exported text-to-image graph in {rt}: image relative error {err:.3e}");
            assert!(err < 1e-3, "{rt}: relative error {err}");
        }
    }
}

#[test]
fn cli_exports_and_validates_a_pipeline_and_refuses_bad_inputs_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t2i/model.onnx");
    let pipe = pipeline();
    common::ok(&[
        "export",
        "--model",
        common::s(&pipe),
        "--steps",
        "2",
        "--guidance-scale",
        "3",
        "--out",
        common::s(&out),
    ]);
    let v = common::ok(&["validate", common::s(&out)]);
    assert!(v.contains("result: PASS"), "{v}");
    // another graph's export in the same directory is refused before anything is written
    let other = out.with_file_name("other.onnx");
    let (code, e) = common::fails(&[
        "export",
        "--model",
        common::s(&pipe),
        "--steps",
        "2",
        "--out",
        common::s(&other),
    ]);
    assert!(
        code == 2 && e.contains("already holds the export of model.onnx"),
        "{code} {e}"
    );
    assert!(!other.exists());
    // an existing export is not overwritten without --force
    let (code, e) = common::fails(&[
        "export",
        "--model",
        common::s(&pipe),
        "--steps",
        "2",
        "--out",
        common::s(&out),
    ]);
    assert_eq!(code, 2, "{e}");
    // guidance below 1, --guidance-scale on a model that is not a pipeline, a pipeline of
    // another class: one line, exit 2
    let (code, e) = common::fails(&[
        "export",
        "--model",
        common::s(&pipe),
        "--guidance-scale",
        "0.5",
        "--out",
        common::s(&tmp.path().join("g/model.onnx")),
    ]);
    assert!(code == 2 && e.contains("--guidance-scale"), "{code} {e}");
    let teacher = common::tiny_teacher(tmp.path());
    let (code, e) = common::fails(&[
        "export",
        "--model",
        common::s(&teacher),
        "--guidance-scale",
        "2",
        "--out",
        common::s(&tmp.path().join("m/model.onnx")),
    ]);
    assert!(code == 2 && e.contains("pipeline"), "{code} {e}");
    let other = tmp.path().join("xl");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionXLPipeline"}"#,
    )
    .unwrap();
    let (code, e) = common::fails(&[
        "export",
        "--model",
        common::s(&other),
        "--out",
        common::s(&tmp.path().join("x/model.onnx")),
    ]);
    assert!(
        code == 2 && e.contains("StableDiffusionXLPipeline"),
        "{code} {e}"
    );
    // commands that do not take pipelines yet say so, and write nothing
    let never = tmp.path().join("never");
    for args in [
        vec![
            "distill",
            "--teacher",
            common::s(&pipe),
            "--steps",
            "2",
            "--out",
            common::s(&never),
        ],
        vec!["bench", "--model", common::s(&pipe), "--runtime", "tract"],
    ] {
        let (code, e) = common::fails(&args);
        assert!(
            code == 2 && e.contains("does not take pipeline teachers yet"),
            "{code} {e}"
        );
    }
    assert!(!never.exists());
}

#[test]
fn cli_teacher_run_and_sample_on_a_pipeline_folder_match_diffusers() {
    let io = common::load(&pipeline().join("io.safetensors"));
    let tmp = tempfile::tempdir().unwrap();
    let save = |name: &str, pairs: &[(&str, &str)]| {
        let mut m = std::collections::HashMap::new();
        for (to, from) in pairs {
            m.insert(to.to_string(), io[*from].clone());
        }
        let p = tmp.path().join(name);
        candle_core::safetensors::save(&m, &p).unwrap();
        p
    };
    let pipe = pipeline();
    // teacher run: one UNet call
    let run_in = save(
        "run.safetensors",
        &[
            ("x", "x"),
            ("t", "t"),
            ("encoder_hidden_states", "prompt_embeds"),
        ],
    );
    let run_out = tmp.path().join("run_out.safetensors");
    common::ok(&[
        "teacher",
        "run",
        "--model",
        common::s(&pipe),
        "--inputs",
        common::s(&run_in),
        "--out",
        common::s(&run_out),
    ]);
    let y = common::load(&run_out);
    assert!(common::rel_err(&y["denoiser_out"], &io["denoiser_out"]) < 1e-4);
    // sample from x_T and ids, the case's guidance and steps
    let s_in = save(
        "s.safetensors",
        &[
            ("x_T", "x_T"),
            ("input_ids", "input_ids"),
            ("negative_input_ids", "negative_input_ids"),
        ],
    );
    let s_out = tmp.path().join("s_out.safetensors");
    common::ok(&[
        "sample",
        "--model",
        common::s(&pipe),
        "--inputs",
        common::s(&s_in),
        "--steps",
        "4",
        "--guidance-scale",
        "7.5",
        "--out",
        common::s(&s_out),
    ]);
    let s = common::load(&s_out);
    assert!(common::rel_err(&s["sample"], &io["pipeline_latents"]) < 1e-3);
    assert!(common::rel_err(&s["image"], &io["pipeline_image"]) < 1e-3);
    // from prompts: a PNG; a prompt longer than the tokenizer allows is truncated with a warning
    let png = tmp.path().join("grid.png");
    let long = "a photo of a sneaker ".repeat(30);
    let o = common::flashctl(&[
        "sample",
        "--model",
        common::s(&pipe),
        "--prompt",
        "a photo of a sneaker",
        "--prompt",
        &long,
        "--steps",
        "2",
        "--png",
        common::s(&png),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("truncated"));
    assert!(png.exists());
    // wrong embedding width: one line, exit 2
    let mut m = std::collections::HashMap::new();
    m.insert("x_T".to_string(), io["x_T"].clone());
    m.insert(
        "prompt_embeds".to_string(),
        Tensor::zeros((2, 77, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let bad = tmp.path().join("bad.safetensors");
    candle_core::safetensors::save(&m, &bad).unwrap();
    let (code, e) = common::fails(&[
        "sample",
        "--model",
        common::s(&pipe),
        "--inputs",
        common::s(&bad),
        "--out",
        common::s(&tmp.path().join("never.safetensors")),
    ]);
    assert!(
        code == 2 && e.contains("prompt_embeds") && e.contains("32"),
        "{code} {e}"
    );
    assert!(!tmp.path().join("never.safetensors").exists());
    // prompts on a model that is not a pipeline
    let teacher = common::tiny_teacher(tmp.path());
    let (code, e) = common::fails(&[
        "sample",
        "--model",
        common::s(&teacher),
        "--prompt",
        "a cat",
        "--png",
        common::s(&png),
    ]);
    assert!(code == 2 && e.contains("--prompt"), "{code} {e}");
}

#[test]
fn cli_components_export_three_graphs_that_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("parts/model.onnx");
    common::ok(&[
        "export",
        "--model",
        common::s(&pipeline()),
        "--components",
        "--out",
        common::s(&out),
    ]);
    for (c, inputs, outputs) in [
        ("text_encoder", vec!["input_ids"], vec!["prompt_embeds"]),
        (
            "unet",
            vec!["x", "t", "encoder_hidden_states"],
            vec!["denoiser_out"],
        ),
        ("vae_decoder", vec!["latents"], vec!["image"]),
    ] {
        let graph = tmp.path().join("parts").join(c).join("model.onnx");
        let v = common::ok(&["validate", common::s(&graph)]);
        assert!(v.contains("result: PASS"), "{c}: {v}");
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(graph.with_file_name("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(m["kind"], "component");
        assert_eq!(m["pipeline"]["component"], c);
        let names = |k: &str| -> Vec<String> {
            m[k].as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("inputs"), inputs, "{c}");
        assert_eq!(names("outputs"), outputs, "{c}");
    }
    // a second export into the same place is refused without --force
    let (code, e) = common::fails(&[
        "export",
        "--model",
        common::s(&pipeline()),
        "--components",
        "--out",
        common::s(&out),
    ]);
    assert_eq!(code, 2, "{e}");
}
