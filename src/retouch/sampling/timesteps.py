"""Timestep samplers: DDIM, DDIM CFG++, PLMS and UniPC as A1111 v1.10.1 runs them (spec §4.2).

Here ``model(x, t, **extra_args)`` returns the (guided) noise prediction ε at integer timestep ``t``;
``timesteps`` is the ascending list of timesteps to visit (the loop walks it from the top).
"""

from __future__ import annotations

import torch

from retouch.sampling.samplers import default_noise_sampler


def _ddim_tables(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    a, a_prev = alphas.cpu().double(), alphas_prev.cpu()
    sigmas = eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    return alphas, alphas_prev, sqrt_one_minus_alphas, sigmas


def _ddim_steps(step_eps, x, timesteps, alphas_cumprod, eta, callback, noise_sampler):
    """The DDIM loop; ``step_eps(x, t) -> (ε for x₀, ε for the direction)``."""
    noise_sampler = noise_sampler or default_noise_sampler(x)
    alphas, alphas_prev, sqrt_one_minus_alphas, sigmas = _ddim_tables(alphas_cumprod, timesteps, eta)
    s_in = x.new_ones([x.shape[0]])
    s_x = x.new_ones((x.shape[0],) + (1,) * (x.ndim - 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t, direction = step_eps(x, timesteps[index].item() * s_in)
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * direction
        noise = sigma_t * noise_sampler(None, None)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


@torch.no_grad()
def sample_ddim(model, x, timesteps, *, alphas_cumprod, extra_args=None, callback=None, noise_sampler=None,
                eta=0.0):
    """DDIM over ``model(x, t) -> ε``."""
    extra_args = extra_args or {}

    def step_eps(x, t):
        e_t = model(x, t, **extra_args)
        return e_t, e_t

    return _ddim_steps(step_eps, x, timesteps, alphas_cumprod, eta, callback, noise_sampler)


@torch.no_grad()
def sample_ddim_cfgpp(model, x, timesteps, *, alphas_cumprod, extra_args=None, callback=None,
                      noise_sampler=None, eta=0.0):
    """DDIM CFG++: x₀ from the guided ε (guided with cfg_scale / 12.5, set up by the caller), the
    direction from the *unconditional* ε of the same call (``model.with_uncond(x, t) -> (ε, ε_uncond)``)."""
    extra_args = extra_args or {}
    return _ddim_steps(lambda x, t: model.with_uncond(x, t, **extra_args), x, timesteps, alphas_cumprod, eta,
                       callback, noise_sampler)


@torch.no_grad()
def sample_plms(model, x, timesteps, *, alphas_cumprod, extra_args=None, callback=None, noise_sampler=None):
    """PLMS (pseudo linear multistep); its first step makes one extra model call."""
    extra_args = extra_args or {}
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    s_in = x.new_ones([x.shape[0]])
    s_x = x.new_ones((x.shape[0],) + (1,) * (x.ndim - 1))
    old_eps: list[torch.Tensor] = []

    def step(x, e_t, index):
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        ts = timesteps[index].item() * s_in
        t_next = timesteps[max(index - 1, 0)].item() * s_in
        e_t = model(x, ts, **extra_args)
        if not old_eps:
            x_prev, _ = step(x, e_t, index)
            e_t_next = model(x_prev, t_next, **extra_args)
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x_prev, pred_x0 = step(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        x = x_prev
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


def ddim_timesteps(steps: int) -> torch.Tensor:
    """A1111's timestep grid for ``steps`` steps: ``clip(range(0, 1000, 1000 // steps) + 1, 0, 999)``."""
    if steps <= 0 or steps > 1000:
        raise ValueError(f"timestep samplers need 1..1000 steps for the schedule, got {steps}")
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def sample_unipc(model, x, timesteps, *, alphas_cumprod, extra_args=None, callback=None, noise_sampler=None,
                 variant="bh1", order=3, skip_type="time_uniform", lower_order_final=True):
    from retouch.sampling.unipc import sample_unipc as run

    return run(model, x, timesteps, alphas_cumprod=alphas_cumprod, extra_args=extra_args, callback=callback,
               variant=variant, order=order, skip_type=skip_type, lower_order_final=lower_order_final)
