"""Independent NumPy transcriptions of the KO paper's equations (float64, loops).

Used as the ground truth by the tests. Only the random unit directions are taken
from kinetix (they are the inputs of Eq. 6, not part of the equations).
"""

import numpy as np


def cos_matrix(x):
    n = x.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            ni, nj = np.linalg.norm(x[i]), np.linalg.norm(x[j])
            out[i, j] = 0.0 if ni == 0 or nj == 0 else x[i] @ x[j] / (ni * nj)
    return out


def soft(w, g, c, threshold=None, include_self=True):
    """Algorithm 2: g* = g - c * (cos(w,w) ⊙ cos(g,g)) g."""
    w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
    s = cos_matrix(w) * cos_matrix(g)
    if threshold is not None:
        s[s < threshold] = 0.0
    if not include_self:
        np.fill_diagonal(s, 0.0)
    out = g.copy()
    for i in range(g.shape[0]):
        for j in range(g.shape[0]):
            out[i] -= c * s[i, j] * g[j]
    return out


def hard_accept(w, g, c, length_scale=1.0):
    """Eq. 7 on the unordered pairs i < j."""
    n = w.shape[0]
    w_r = np.array([[np.linalg.norm(w[i] - w[j]) for j in range(n)] for i in range(n)])
    g_r = np.array([[np.linalg.norm(g[i] - g[j]) for j in range(n)] for i in range(n)])
    g_max = g_r.max()
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            if g_max > 0 and g_r[i, j] * np.exp(-w_r[i, j] / length_scale) / g_max > 1 - c:
                pairs.append((i, j))
    return pairs


def hard_paper(w, g, c, directions, length_scale=1.0):
    """Eq. 5-8. ``directions(pairs) -> {(i, j): unit n_ij}`` for i < j."""
    w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
    pairs = hard_accept(w, g, c, length_scale)
    n_dir = directions(pairs)
    out = g.copy()
    for i, j in pairs:
        g_cm = 0.5 * (g[i] + g[j])
        g_r = np.linalg.norm(g[i] - g[j])
        n_ij = n_dir[(i, j)]
        out[i] += g_cm + 0.5 * g_r * n_ij - g[i]  # (Δg)_ij, Eq. 6
        out[j] += g_cm + 0.5 * g_r * (-n_ij) - g[j]  # (Δg)_ji with n_ji = -n_ij
    return out, pairs


def hard_released_torch_layout(W, grad, collision_rate, rand_vec, noise_scale=1.0):
    """ko.py apply_gradient_collision_v1, transcribed with dense (chnl, n, n) tensors.

    ``W, grad``: PyTorch layout (chnl, n), the particles are the n columns.
    ``rand_vec``: (chnl, num_pairs) already normalised as the code does, pairs in
    ``triu_indices(n, n, 1)`` order.
    """
    W, grad = np.asarray(W, np.float64), np.asarray(grad, np.float64)
    chnl, n = W.shape
    x_r = np.linalg.norm(W[:, :, None] - W[:, None, :], axis=0)
    v_r = np.linalg.norm(grad[:, :, None] - grad[:, None, :], axis=0)
    v_cm = (grad[:, :, None] + grad[:, None, :]) / 2
    u_x = np.exp(-0.05 * x_r)
    mask = v_r / v_r.max() * u_x
    collision_mask = mask > (1 - collision_rate)
    iu = np.triu_indices(n, 1)
    v_r_leaving = np.zeros((chnl, n, n))
    proj = v_r[iu][None, :] * rand_vec
    v_r_leaving[:, iu[0], iu[1]] = proj
    v_r_leaving[:, iu[1], iu[0]] = -proj
    delta_v = v_cm + v_r_leaving - grad[:, :, None]
    return grad + np.sum(delta_v * collision_mask[None], axis=1) * noise_scale


def dsmc_released_torch_layout(x, v, coll_coef, rand_dir, dt=1.0):
    """KITINet's released KINET_DSMC ("fyf" variant), dense (bs, chnl, n, n) tensors.

    ``x, v``: (bs, chnl, n), particles are the n columns. ``rand_dir[b][(i, j)]``:
    the unit vector r_ij (i < j) in R^chnl. Positions of colliding particles move
    to the mean of their pair midpoints (self included), then drift.
    """
    x, v = np.asarray(x, np.float64), np.asarray(v, np.float64)
    bs, chnl, n = x.shape
    out_x, out_v = np.zeros_like(x), np.zeros_like(v)
    for b in range(bs):
        xb, vb = x[b], v[b]
        x_r = np.linalg.norm(xb[:, :, None] - xb[:, None, :], axis=0)
        v_r = np.linalg.norm(vb[:, :, None] - vb[:, None, :], axis=0)
        v_cm = (vb[:, :, None] + vb[:, None, :]) / 2
        x_cm = (xb[:, :, None] + xb[:, None, :]) / 2
        mask = v_r / v_r.max() * np.exp(-x_r)
        m = mask > (1 - coll_coef)
        leaving = np.zeros((chnl, n, n))
        for i in range(n):
            for j in range(i + 1, n):
                leaving[:, i, j] = v_r[i, j] * rand_dir[b][(i, j)]
                leaving[:, j, i] = -leaving[:, i, j]
        delta_v = v_cm + leaving - vb[:, :, None]
        v_new = vb + np.sum(delta_v * m[None], axis=1)
        deg = m.sum(0)
        x_mix = (xb + np.sum(x_cm * m[None], axis=1)) / (1 + deg)[None]
        out_x[b] = x_mix + v_new * dt
        out_v[b] = v_new
    return out_x, out_v
