//! Per-step diagnosis of a few-step student against its teacher (`flashctl eval --per-step`):
//! for each step i of the student's own sampler, from the state the student actually reaches,
//! the error of its x0 against the teacher's ODE solution from that state, and of its next state
//! against the teacher's ODE over the same segment t_i -> t_{i+1}. Says which step breaks.

use crate::distill::imagine_flash::{scaled_steps, segment_plan, trajectory_plan, x0_for_step};
use crate::sampler::SamplerPlan;
use crate::teacher::Teacher;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct StepError {
    pub step: usize,
    pub t: usize,
    /// the timestep the step lands on (0: the sample)
    pub t_next: usize,
    /// RMS of (student x0 - teacher's ODE solution from the same state)
    pub x0_rmse: f64,
    /// RMS of (student's next state - teacher's ODE over the segment from the same state)
    pub next_rmse: f64,
    /// RMS of the teacher's next state (the scale `next_rmse` is read against)
    pub next_rms: f64,
}

#[derive(Debug, Serialize)]
pub struct PerStepReport {
    pub count: usize,
    pub teacher_steps: usize,
    pub steps: Vec<StepError>,
    /// RMS of (student sample - teacher's solution from the same x_T): the accumulated error
    pub sample_rmse_vs_teacher: f64,
}

fn rms(x: &Tensor) -> Result<f64> {
    Ok(x.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt() as f64)
}

pub fn per_step(
    student: &Teacher,
    teacher: &Teacher,
    count: usize,
    seed: u64,
    teacher_steps: usize,
    device: &Device,
) -> Result<PerStepReport> {
    let plan = student.plan(None, None)?;
    let ts = teacher.schedule();
    let mut shape = vec![count];
    shape.extend(student.sample_shape());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let noise = Tensor::from_vec(crate::train::randn(&mut rng, n), shape, device)?;
    let labels = student
        .num_classes()
        .map(|k| crate::distill::imagine_flash::random_labels(&mut rng, count, k, device))
        .transpose()?;
    let teacher_solution = |x: &Tensor, t: usize| -> Result<Tensor> {
        let p = trajectory_plan(ts, t, scaled_steps(teacher_steps, t, ts))?;
        teacher.sample(&p, x, labels.as_ref())
    };
    let mut x = noise.clone();
    let mut rows = vec![];
    let k = plan.steps.len();
    for i in 0..k {
        let s = &plan.steps[i];
        let one = SamplerPlan {
            steps: vec![s.clone()],
            timesteps: vec![s.t],
            noise_correction: plan.noise_correction && i == 0,
            ..plan.clone()
        };
        let next_s = student.sample(&one, &x, labels.as_ref())?;
        let x0_teacher = teacher_solution(&x, s.t)?;
        let (next_t, t_next) = if i + 1 < k {
            let t_next = plan.steps[i + 1].t;
            let seg = segment_plan(ts, s.t, t_next, teacher_steps)?;
            (teacher.sample(&seg, &x, labels.as_ref())?, t_next)
        } else {
            (x0_teacher.clone(), 0)
        };
        let x0_s = if i + 1 < k {
            x0_for_step(&plan, i, &x, &next_s)?
        } else {
            next_s.clone()
        };
        rows.push(StepError {
            step: i + 1,
            t: s.t,
            t_next,
            x0_rmse: rms(&(&x0_s - &x0_teacher)?)?,
            next_rmse: rms(&(&next_s - &next_t)?)?,
            next_rms: rms(&next_t)?,
        });
        x = next_s;
    }
    let from_noise = teacher_solution(&noise, plan.steps[0].t)?;
    Ok(PerStepReport {
        count,
        teacher_steps,
        steps: rows,
        sample_rmse_vs_teacher: rms(&(&x - &from_noise)?)?,
    })
}

pub fn print(r: &PerStepReport) {
    println!(
        "per step (student's own states, {} samples; teacher ODE with ~{} DDIM steps over the schedule):",
        r.count, r.teacher_steps
    );
    println!(
        "{:>5} {:>6} {:>7} {:>12} {:>12} {:>12}",
        "step", "t", "t_next", "x0 rmse", "next rmse", "next rms"
    );
    for s in &r.steps {
        println!(
            "{:>5} {:>6} {:>7} {:>12.4} {:>12.4} {:>12.4}",
            s.step, s.t, s.t_next, s.x0_rmse, s.next_rmse, s.next_rms
        );
    }
    println!(
        "sample vs the teacher's solution from the same noise: rmse {:.4}",
        r.sample_rmse_vs_teacher
    );
}
