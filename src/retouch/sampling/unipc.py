"""UniPC (Zhao et al. 2023), multistep, data prediction, as A1111 v1.10.1 runs it for the "UniPC" sampler.

The model is ``eps_model(x, t_input)`` at A1111's time input ``(t − 1/N)·1000``; continuous time ``t``
lives in ``[1/N, 1]``. Options: ``uni_pc_variant`` (bh1, bh2, vary_coeff), ``uni_pc_skip_type``,
``uni_pc_order``, ``uni_pc_lower_order_final``.
"""

from __future__ import annotations

import torch


def _expand(v: torch.Tensor, dims: int) -> torch.Tensor:
    return v[(...,) + (None,) * (dims - 1)]


def _interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear f(x) through (xp, yp) (both ascending in xp), extrapolating at the ends.

    ``x`` is 1-D; ``xp``/``yp`` are 1-D keypoints. Same segment choice as DPM-Solver's interpolate_fn.
    """
    k = xp.shape[0]
    # index of the first keypoint greater than x: where x would be inserted (ties go after)
    pos = torch.searchsorted(xp, x, right=False)
    start = torch.clamp(pos - 1, 0, k - 2)
    start_x, end_x = xp[start], xp[start + 1]
    start_y, end_y = yp[start], yp[start + 1]
    return start_y + (x - start_x) * (end_y - start_y) / (end_x - start_x)


class DiscreteVP:
    """The VP noise schedule of a discrete-time model: log α_t interpolated on t_i = (i+1)/N."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_n = len(self.log_alphas)
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:]

    def log_mean_coeff(self, t):
        return _interpolate(t.reshape(-1), self.t_array.to(t.device), self.log_alphas.to(t.device))

    def alpha(self, t):
        return torch.exp(self.log_mean_coeff(t))

    def std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_mean_coeff(t)))

    def lambda_(self, t):
        log_mean = self.log_mean_coeff(t)
        return log_mean - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean))

    def inverse_lambda(self, lamb):
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(lamb.device), -2.0 * lamb)
        return _interpolate(log_alpha.reshape(-1), torch.flip(self.log_alphas, [0]), torch.flip(self.t_array, [0]))


class UniPC:
    def __init__(self, eps_model, schedule: DiscreteVP, variant: str = "bh1", after_update=None):
        self.eps_model = eps_model
        self.ns = schedule
        self.variant = variant
        self.after_update = after_update

    def data_prediction(self, x, t):
        noise = self.eps_model(x, (t - 1.0 / self.ns.total_n) * 1000.0)
        dims = x.dim()
        return (x - _expand(self.ns.std(t), dims) * noise) / _expand(self.ns.alpha(t), dims)

    def time_steps(self, skip_type, t_T, t_0, n, device):
        if skip_type == "logSNR":
            lambda_T = self.ns.lambda_(torch.as_tensor(t_T).to(device))
            lambda_0 = self.ns.lambda_(torch.as_tensor(t_0).to(device))
            return self.ns.inverse_lambda(torch.linspace(lambda_T.cpu().item(), lambda_0.cpu().item(), n + 1).to(device))
        if skip_type == "time_uniform":
            return torch.linspace(t_T, t_0, n + 1).to(device)
        if skip_type == "time_quadratic":
            return torch.linspace(t_T ** 0.5, t_0 ** 0.5, n + 1).pow(2).to(device)
        raise ValueError(f"uni_pc_skip_type must be logSNR, time_uniform or time_quadratic, got {skip_type!r}")

    def update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        if self.variant in ("bh1", "bh2"):
            return self._bh_update(x, model_prev_list, t_prev_list, t, order, use_corrector)
        return self._vary_update(x, model_prev_list, t_prev_list, t, order, use_corrector)

    def _history(self, model_prev_list, t_prev_list, t, order, per_batch):
        """Terms both update variants share: the step h in λ, the ratios r_k of earlier steps to h
        (a batch vector for vary_coeff, its first entry for the B(h) variants) and the differences D1_k."""
        ns = self.ns
        t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
        lambda_prev_0 = ns.lambda_(t_prev_0)
        h = ns.lambda_(t) - lambda_prev_0
        rks, d1s = [], []
        for i in range(1, order):
            rk = (ns.lambda_(t_prev_list[-(i + 1)]) - lambda_prev_0) / h
            rk = rk if per_batch else rk[0]
            rks.append(rk)
            d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        alpha_t = torch.exp(ns.log_mean_coeff(t))
        return model_prev_0, ns.std(t_prev_0), ns.std(t), alpha_t, h, rks, d1s

    def _bh_update(self, x, model_prev_list, t_prev_list, t, order, use_corrector):
        dims = x.dim()
        model_prev_0, sigma_prev_0, sigma_t, alpha_t, h, rks, d1s = self._history(
            model_prev_list, t_prev_list, t, order, per_batch=False)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        r_rows, b_values = [], []
        factorial_i = 1
        for i in range(1, order + 1):
            r_rows.append(torch.pow(rks, i - 1))
            b_values.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        r_mat = torch.stack(r_rows)
        b = torch.tensor(b_values, device=x.device)
        d1s_t = torch.stack(d1s, dim=1) if d1s else None
        rhos_p = None
        if d1s_t is not None:
            rhos_p = torch.tensor([0.5], device=x.device) if order == 2 else torch.linalg.solve(r_mat[:-1, :-1], b[:-1])
        x_t_ = _expand(sigma_t / sigma_prev_0, dims) * x - _expand(alpha_t * h_phi_1, dims) * model_prev_0
        pred_res = torch.einsum("k,bkchw->bchw", rhos_p, d1s_t) if d1s_t is not None else 0
        x_t = x_t_ - _expand(alpha_t * b_h, dims) * pred_res
        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(r_mat, b)
            model_t = self.data_prediction(x_t, t)
            corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s_t) if d1s_t is not None else 0
            x_t = x_t_ - _expand(alpha_t * b_h, dims) * (corr_res + rhos_c[-1] * (model_t - model_prev_0))
        return x_t, model_t

    def _vary_update(self, x, model_prev_list, t_prev_list, t, order, use_corrector):
        model_prev_0, sigma_prev_0, sigma_t, alpha_t, h, rks, d1s = self._history(
            model_prev_list, t_prev_list, t, order, per_batch=True)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)
        k_len = len(rks)
        cols, col = [], torch.ones_like(rks)
        for k in range(1, k_len + 1):
            cols.append(col)
            col = col * rks / (k + 1)
        c_mat = torch.stack(cols, dim=1)
        d1s_t = torch.stack(d1s, dim=1) if d1s else None
        a_p = torch.linalg.inv(c_mat[:-1, :-1]) if d1s_t is not None else None
        hh = -h
        h_phi_ks, factorial_k, h_phi_k = [], 1, torch.expm1(hh)
        h_phi_1 = h_phi_k
        for k in range(1, k_len + 2):
            h_phi_ks.append(h_phi_k)
            h_phi_k = h_phi_k / hh - 1 / factorial_k
            factorial_k *= k + 1
        x_t_ = sigma_t / sigma_prev_0 * x - alpha_t * h_phi_1 * model_prev_0
        x_t = x_t_
        if d1s_t is not None and a_p is not None:
            for k in range(k_len - 1):
                x_t = x_t - alpha_t * h_phi_ks[k + 1] * torch.einsum("bkchw,k->bchw", d1s_t, a_p[k])
        model_t = None
        if use_corrector:
            a_c = torch.linalg.inv(c_mat)
            model_t = self.data_prediction(x_t, t)
            d1_t = model_t - model_prev_0
            x_t = x_t_
            k = 0
            for k in range(k_len - 1):
                x_t = x_t - alpha_t * h_phi_ks[k + 1] * torch.einsum("bkchw,k->bchw", d1s_t, a_c[k][:-1])
            x_t = x_t - alpha_t * h_phi_ks[k_len] * (d1_t * a_c[k][-1])
        return x_t, model_t

    def sample(self, x, steps, t_start, order=3, skip_type="time_uniform", lower_order_final=True):
        if steps < order:
            raise ValueError(f"UniPC order ({order}) must be at most the number of sampling steps ({steps}); "
                             "lower the uni_pc_order option or raise steps/denoising strength")
        t_0 = 1.0 / self.ns.total_n
        timesteps = self.time_steps(skip_type, t_start, t_0, steps, x.device)
        vec_t = timesteps[0].expand(x.shape[0])
        model_prev_list, t_prev_list = [self.data_prediction(x, vec_t)], [vec_t]
        for init_order in range(1, order):
            vec_t = timesteps[init_order].expand(x.shape[0])
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, init_order, use_corrector=True)
            if model_x is None:
                model_x = self.data_prediction(x, vec_t)
            if self.after_update is not None:
                self.after_update(x, model_x)
            model_prev_list.append(model_x)
            t_prev_list.append(vec_t)
        for step in range(order, steps + 1):
            vec_t = timesteps[step].expand(x.shape[0])
            step_order = min(order, steps + 1 - step) if lower_order_final else order
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=step != steps)
            if self.after_update is not None:
                self.after_update(x, model_x)
            for i in range(order - 1):
                t_prev_list[i] = t_prev_list[i + 1]
                model_prev_list[i] = model_prev_list[i + 1]
            t_prev_list[-1] = vec_t
            if step < steps:
                if model_x is None:
                    model_x = self.data_prediction(x, vec_t)
                model_prev_list[-1] = model_x
        return x


@torch.no_grad()
def sample_unipc(model, x, timesteps, *, alphas_cumprod, extra_args=None, callback=None, variant="bh1", order=3,
                 skip_type="time_uniform", lower_order_final=True):
    """A1111's UniPC for img2img: start at ``timesteps[-1]/1000 + 1/1000`` and take ``len(timesteps)`` steps."""
    extra_args = extra_args or {}
    index = 0

    def after_update(x_now, model_x):
        nonlocal index
        if callback is not None:
            callback({"x": x_now, "i": index, "sigma": 0, "sigma_hat": 0, "denoised": model_x})
        index += 1

    solver = UniPC(lambda x_in, t_in: model(x_in, t_in, **extra_args), DiscreteVP(alphas_cumprod),
                   variant=variant, after_update=after_update)
    t_start = timesteps[-1] / 1000 + 1 / 1000
    return solver.sample(x, steps=len(timesteps), t_start=t_start, order=order, skip_type=skip_type,
                         lower_order_final=lower_order_final)
