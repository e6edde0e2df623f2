"""T-block geometry and the scripted (privileged) pushing expert for wmplan/PushT-v0.

The expert works on a quasi-static model of planar pushing: a push along the
inward normal ``-n`` at a boundary point ``r`` (relative to the centroid) makes the
block translate along ``-n`` and turn with ``omega ~ (r x -n) / C**2``
(ellipsoidal limit surface, ``C`` = torque/force ratio of the table friction).
Every step it scores a fixed set of boundary contacts by how well their predicted
twist points along the pose error (weighted cosine, minus a small approach-cost
term), keeps the current contact unless another is clearly better (hysteresis),
and then either pushes (when the disc sits in front of the contact) or travels
to the pre-contact point: straight when the way is clear, otherwise around the
block on a circle that clears it.
"""
from __future__ import annotations

import numpy as np

BAR_HALF = (0.24, 0.06)  # half extents of the T's top bar
STEM_HALF = (0.06, 0.15)  # half extents of the T's stem


def t_boxes() -> list[tuple[float, float, float, float]]:
    """(cx, cy, hx, hy) of the bar and the stem in the block frame (origin = area centroid)."""
    stem_cy, bar_cy = 0.0, STEM_HALF[1] + BAR_HALF[1]  # raw layout: the bar sits on the stem's top
    a_bar, a_stem = 4 * BAR_HALF[0] * BAR_HALF[1], 4 * STEM_HALF[0] * STEM_HALF[1]
    cy = (a_bar * bar_cy + a_stem * stem_cy) / (a_bar + a_stem)
    return [(0.0, bar_cy - cy, *BAR_HALF), (0.0, stem_cy - cy, *STEM_HALF)]


def _contacts(pusher_r: float, margin: float = 0.015, spacing: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pushing contacts on the T outline: points [K, 2] and outward normals [K, 2].

    Points too close to a concave corner for the disc to reach are left out.
    """
    (bx, by, bhx, bhy), (sx, sy, shx, shy) = t_boxes()
    top, bar_bot, stem_bot = by + bhy, by - bhy, sy - shy
    edges = [  # (fixed coordinate axis, value, lo, hi, normal)
        ("y", top, -bhx + margin, bhx - margin, (0, 1)),
        ("x", -bhx, bar_bot + margin, top - margin, (-1, 0)),
        ("x", bhx, bar_bot + margin, top - margin, (1, 0)),
        ("y", bar_bot, -bhx + margin, -shx - pusher_r - 0.01, (0, -1)),
        ("y", bar_bot, shx + pusher_r + 0.01, bhx - margin, (0, -1)),
        ("x", -shx, stem_bot + margin, bar_bot - pusher_r - 0.01, (-1, 0)),
        ("x", shx, stem_bot + margin, bar_bot - pusher_r - 0.01, (1, 0)),
        ("y", stem_bot, -shx + margin, shx - margin, (0, -1)),
    ]
    pts, nrm = [], []
    for axis, v, lo, hi, n in edges:
        k = max(2, int(np.ceil((hi - lo) / spacing)) + 1)
        for t in np.linspace(lo, hi, k):
            pts.append((t, v) if axis == "y" else (v, t))
            nrm.append(n)
    return np.array(pts), np.array(nrm, float)


def _rot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


def wrap_angle(a: float) -> float:
    """Wrap an angle to [-pi, pi)."""
    return float((a + np.pi) % (2 * np.pi) - np.pi)


class PushTExpert:
    """Stateful scripted pusher; ``act`` returns a pusher velocity (world units/s).

    Args:
        pusher_r: disc radius.
        arena: arena interior half-width (targets are kept inside it).
        max_speed: speed limit of the returned velocity.
        friction_radius: C of the limit-surface model (torque/force ratio).
        angle_weight: metres that one radian of yaw error is worth when scoring.
    """

    def __init__(
        self,
        pusher_r: float,
        arena: float,
        max_speed: float,
        friction_radius: float = 0.22,
        angle_weight: float = 0.3,
    ) -> None:
        self.pusher_r, self.arena, self.max_speed = pusher_r, arena, max_speed
        self.c2, self.w = friction_radius**2, angle_weight
        self.points, self.normals = _contacts(pusher_r)
        corners = np.array([[cx + sx * hx, cy + sy * hy] for cx, cy, hx, hy in t_boxes() for sx in (-1, 1) for sy in (-1, 1)])
        self.clear_r = float(np.linalg.norm(corners, axis=1).max()) + pusher_r + 0.04
        self._cur: int | None = None

    def reset(self) -> None:
        self._cur = None

    # ---- geometry ---------------------------------------------------------------
    def _segment_hits_block(self, a: np.ndarray, b: np.ndarray, pose: np.ndarray) -> bool:
        """True when the disc swept from a to b (world xy) would touch the block."""
        rt = _rot(pose[2]).T
        la, lb = rt @ (a - pose[:2]), rt @ (b - pose[:2])
        d = lb - la
        for cx, cy, hx, hy in t_boxes():
            lo = np.array([cx - hx, cy - hy]) - self.pusher_r - 0.005
            hi = np.array([cx + hx, cy + hy]) + self.pusher_r + 0.005
            t0, t1 = 0.0, 1.0
            hit = True
            for k in range(2):
                if abs(d[k]) < 1e-12:
                    if not lo[k] <= la[k] <= hi[k]:
                        hit = False
                        break
                    continue
                u0, u1 = sorted(((lo[k] - la[k]) / d[k], (hi[k] - la[k]) / d[k]))
                t0, t1 = max(t0, u0), min(t1, u1)
                if t0 > t1:
                    hit = False
                    break
            if hit:
                return True
        return False

    def _scores(self, pose: np.ndarray, goal: np.ndarray, pusher: np.ndarray) -> np.ndarray:
        R = _rot(pose[2])
        err = np.array([goal[0] - pose[0], goal[1] - pose[1], self.w * wrap_angle(goal[2] - pose[2])])
        u = -(self.normals @ R.T)  # push directions (world)
        r = self.points @ R.T
        omega = (r[:, 0] * u[:, 1] - r[:, 1] * u[:, 0]) / self.c2
        twist = np.concatenate([u, self.w * omega[:, None]], axis=1)
        cos = twist @ err / (np.linalg.norm(twist, axis=1) * np.linalg.norm(err) + 1e-9)
        pre = pose[:2] + r - u * (self.pusher_r + 0.015)
        return cos - 0.1 * np.linalg.norm(pre - pusher, axis=1)

    # ---- policy -------------------------------------------------------------------
    def act(self, pose: np.ndarray, goal: np.ndarray, pusher: np.ndarray) -> np.ndarray:
        scores = self._scores(pose, goal, pusher)
        best = int(np.argmax(scores))
        if self._cur is None or scores[self._cur] < scores[best] - 0.25 or scores[self._cur] < 0.2:
            self._cur = best
        R = _rot(pose[2])
        n = R @ self.normals[self._cur]
        c = pose[:2] + R @ self.points[self._cur]
        pre = c + n * (self.pusher_r + 0.015)
        rel = pusher - c
        along, lat = rel @ n, rel @ np.array([-n[1], n[0]])
        err = np.hypot(*(goal[:2] - pose[:2])) + self.w * abs(wrap_angle(goal[2] - pose[2]))
        if abs(lat) < 0.03 and -0.02 < along < self.pusher_r + 0.06:  # in front of the contact: push
            speed = float(np.clip(1.5 * err, 0.15, 0.6 * self.max_speed))
            v = c - n * 0.1 - pusher
            return speed * v / (np.linalg.norm(v) + 1e-9)
        return self._travel(pusher, pre, c, n, pose)

    def _travel(self, pusher: np.ndarray, pre: np.ndarray, c: np.ndarray, n: np.ndarray, pose: np.ndarray) -> np.ndarray:
        if not self._segment_hits_block(pusher, pre, pose):
            return self._goto(pusher, pre)
        # staging point: out along the contact normal until clear of the block's circle
        d = c - pose[:2]
        b = d @ n
        t = -b + np.sqrt(max(b * b - d @ d + self.clear_r**2, 0.0))
        stage = np.clip(c + n * max(t, self.pusher_r + 0.05), -self.arena + self.pusher_r, self.arena - self.pusher_r)
        if not self._segment_hits_block(pusher, stage, pose):
            return self._goto(pusher, stage)
        # go around the block on the clearing circle, the shorter way
        rel = pusher - pose[:2]
        rad = np.linalg.norm(rel) + 1e-9
        radial = rel / rad
        ang = wrap_angle(np.arctan2(*(stage - pose[:2])[::-1]) - np.arctan2(rel[1], rel[0]))
        tangent = np.sign(ang or 1.0) * np.array([-radial[1], radial[0]])
        v = tangent + 4.0 * (self.clear_r - rad) * radial
        return self.max_speed * v / (np.linalg.norm(v) + 1e-9)

    def _goto(self, pusher: np.ndarray, target: np.ndarray) -> np.ndarray:
        v = 6.0 * (target - pusher)
        s = np.linalg.norm(v)
        return v if s <= self.max_speed else v * self.max_speed / s
