"""RecurrentLM (DESIGN §5): carried state, truncation, IRNN init, residual, tying, adaptive output."""
import pytest
import torch

from models.recurrent import CELLS, RecurrentLM, detach_state

V = 50


def make(cell, **kw):
    torch.manual_seed(0)
    args = dict(vocab_size=V, cell=cell, embedding_dim=12, hidden_dim=12, num_layers=2, dropout=0.0,
                tie_weights=True)
    args.update(kw)
    return RecurrentLM(**args).eval()


@pytest.mark.parametrize("cell,init", [(c, "default") for c in CELLS] + [("rnn_relu", "identity")])
def test_carried_state_equals_one_long_forward(cell, init):
    m = make(cell, init=init)
    tokens = torch.randint(0, V, (3, 20))
    with torch.no_grad():
        f_all, s_all = m(tokens, None)
        f1, s1 = m(tokens[:, :8], None)
        f2, s2 = m(tokens[:, 8:], s1)
    torch.testing.assert_close(m.log_probs(f2), m.log_probs(f_all[:, 8:]), atol=1e-5, rtol=0)
    torch.testing.assert_close(f1, f_all[:, :8], atol=1e-5, rtol=0)
    for a, b in zip(s2 if isinstance(s2, tuple) else (s2,), s_all if isinstance(s_all, tuple) else (s_all,)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_truncation_stops_gradient_at_window_boundary(cell):
    m = make(cell, tie_weights=False).train()  # untied: only the recurrence could carry gradient to window 1's rows
    tokens = torch.randint(0, V, (2, 10))
    e1 = m.embedding(tokens[:, :5]).detach().requires_grad_(True)
    _, s1 = m.recur(e1, None)
    # without detaching, window 2's loss reaches window 1 (the test can fail)
    f2, _ = m(tokens[:, 5:], s1)
    g, = torch.autograd.grad(m.loss(f2, tokens[:, 5:]), e1, retain_graph=True, allow_unused=True)
    assert g is not None and g.abs().sum() > 0
    f2, _ = m(tokens[:, 5:], detach_state(s1))
    m.zero_grad()
    loss = m.loss(f2, tokens[:, 5:])
    loss.backward()
    assert e1.grad is None or e1.grad.abs().sum() == 0
    # and the embedding rows used only in window 1 got nothing through the recurrence
    only_w1 = sorted(set(tokens[:, :5].flatten().tolist()) - set(tokens[:, 5:].flatten().tolist()))
    assert only_w1 and m.embedding.weight.grad[only_w1].abs().sum() == 0
    # ... where the undetached state does reach them (so the check above can fail)
    m.zero_grad()
    f1, s1 = m(tokens[:, :5], None)
    f2, _ = m(tokens[:, 5:], s1)
    m.loss(f2, tokens[:, 5:]).backward()
    assert m.embedding.weight.grad[only_w1].abs().sum() > 0


def test_irnn_identity_init_zero_bias():
    m = make("rnn_relu", init="identity", embedding_dim=8, hidden_dim=8)
    for layer in m.layers:
        assert torch.equal(layer.weight_hh_l0, torch.eye(8))
        assert torch.count_nonzero(layer.bias_hh_l0) == 0 and torch.count_nonzero(layer.bias_ih_l0) == 0
        assert layer.nonlinearity == "relu"
    assert not torch.equal(make("rnn_relu").layers[0].weight_hh_l0, torch.eye(12))


def test_residual_differs_and_runs():
    tokens = torch.randint(0, V, (2, 7))
    plain, res = make("gru"), make("gru", residual=True)
    res.load_state_dict(plain.state_dict())
    with torch.no_grad():
        fp, _ = plain(tokens, None)
        fr, _ = res(tokens, None)
    assert fr.shape == fp.shape == (2, 7, 12)
    assert not torch.allclose(fp, fr)
    loss = res.loss(fr, tokens)
    assert torch.isfinite(loss)


def test_tied_weights_share_storage_with_and_without_projection():
    m = make("lstm")
    assert m.decoder.weight.data_ptr() == m.embedding.weight.data_ptr() and m.projection is None
    p = make("lstm", embedding_dim=8, hidden_dim=16)
    assert p.decoder.weight.data_ptr() == p.embedding.weight.data_ptr()
    assert p.projection is not None and p.projection.weight.shape == (8, 16)
    f, _ = p(torch.randint(0, V, (2, 3)), None)
    assert p.log_probs(f).shape == (2, 3, V)
    u = make("lstm", tie_weights=False)
    assert u.decoder.weight.data_ptr() != u.embedding.weight.data_ptr()


@pytest.mark.parametrize("output", ["softmax", "adaptive"])
def test_log_probs_exact_and_loss_matches(output):
    kw = dict(output="adaptive", cutoffs=(10, 30), tie_weights=False) if output == "adaptive" else {}
    m = make("lstm", **kw)
    if output == "adaptive":  # a non-trivial frequency order: rank must map ids correctly both ways
        m.set_piece_frequencies(torch.randperm(V, generator=torch.Generator().manual_seed(1)).float())
    tokens = torch.randint(0, V, (3, 6))
    targets = torch.randint(0, V, (3, 6))
    with torch.no_grad():
        f, _ = m(tokens, None)
        lp = m.log_probs(f)
        assert lp.shape == (3, 6, V)
        torch.testing.assert_close(torch.logsumexp(lp, -1), torch.zeros(3, 6), atol=1e-5, rtol=0)
        nll = -lp.gather(-1, targets.unsqueeze(-1)).mean()
        torch.testing.assert_close(m.loss(f, targets), nll, atol=1e-5, rtol=1e-5)
        # the beam search's column order: column j is piece rank_order()[j], the same numbers
        ranked = m.log_probs(f, in_rank_order=True)
        torch.testing.assert_close(ranked, lp[..., m.rank_order()], atol=0, rtol=0)
        # one target per row, computing only its cluster: the same number as the full distribution's
        torch.testing.assert_close(m.target_log_probs(f.reshape(-1, f.size(-1)), targets.reshape(-1)),
                                   lp.reshape(-1, V).gather(1, targets.reshape(-1, 1)).squeeze(1), atol=1e-5, rtol=0)
        if output == "adaptive":
            assert not torch.equal(m.rank_order(), torch.arange(V))  # so the check above can fail


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="cell"):
        make("transformer")
    with pytest.raises(ValueError, match="IRNN"):
        make("lstm", init="identity")
    with pytest.raises(ValueError, match="tie_weights"):
        make("lstm", output="adaptive", cutoffs=(10,))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gate_bias_lands_on_the_keep_gate(cell):
    # PyTorch stacks the gate rows: LSTM i, f, g, o; GRU r, z, n. The bias must land on f (LSTM) or z (GRU), block 1.
    plain, biased = make(cell), make(cell, gate_bias=3.0)
    H = 12
    for p, b in zip(plain.layers, biased.layers):
        total = b.bias_ih_l0 + b.bias_hh_l0
        assert torch.equal(total[H:2 * H], torch.full((H,), 3.0))
        keep = torch.ones_like(total, dtype=torch.bool)
        keep[H:2 * H] = False
        assert torch.equal(b.bias_ih_l0[keep], p.bias_ih_l0[keep]) and torch.equal(b.bias_hh_l0[keep], p.bias_hh_l0[keep])
        assert torch.equal(b.weight_hh_l0, p.weight_hh_l0)
    # What it does: with a huge bias the cell keeps its old state (LSTM c' = f*c + i*g, |i*g| < 1; GRU
    # h' = (1 - z)*n + z*h). Were the bias on another gate, c' would be about half of c, or h' about n.
    m = make(cell, gate_bias=30.0, num_layers=1)
    x = m.embedding(torch.randint(0, V, (4, 1)))
    with torch.no_grad():
        if cell == "lstm":
            h0, c0 = torch.randn(1, 4, H), torch.full((1, 4, H), 100.0)
            _, (_, c1) = m.recur(x, (h0, c0))
            assert (c1 - c0).abs().max() <= 1.0
        else:
            h0 = torch.rand(1, 4, H) * 2 - 1
            _, h1 = m.recur(x, h0)
            torch.testing.assert_close(h1, h0, atol=1e-6, rtol=0)
    assert make(cell, gate_bias=None).state_dict().keys() == plain.state_dict().keys()
    for a, b in zip(make(cell).parameters(), plain.parameters()):  # the default is untouched
        assert torch.equal(a, b)


def test_gate_bias_on_a_cell_without_gates_is_refused():
    with pytest.raises(ValueError, match="gate_bias=1.0 sets the LSTM forget gate or the GRU update gate"):
        make("rnn_tanh", gate_bias=1.0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chrono_init_draws_keep_biases_in_log_1_to_t_max(cell):
    # Tallec & Ollivier 2018: b_keep ~ log U(1, T_max − 1) per unit, b_input = −b_keep (LSTM); total bias b_ih + b_hh.
    H, t_max = 256, 50.0
    m = make(cell, hidden_dim=H, embedding_dim=8, chrono_t_max=t_max)
    plain = make(cell, hidden_dim=H, embedding_dim=8)
    lo, hi = 0.0, float(torch.log(torch.tensor(t_max - 1)))
    for layer, p in zip(m.layers, plain.layers):
        total = (layer.bias_ih_l0 + layer.bias_hh_l0).detach()
        keep = total[H:2 * H]
        assert lo <= float(keep.min()) and float(keep.max()) <= hi
        # spread over the range, not one value: exp(b) ~ U(1, T_max − 1), so its quartiles sit near a quarter of it
        q = torch.quantile(torch.exp(keep), torch.tensor([0.25, 0.75]))
        assert abs(float(q[0]) - (1 + 0.25 * (t_max - 2))) < 5 and abs(float(q[1]) - (1 + 0.75 * (t_max - 2))) < 5
        if cell == "lstm":
            torch.testing.assert_close(total[:H], -keep)
            rest = slice(2 * H, 4 * H)  # g, o untouched
        else:
            rest = torch.cat([torch.arange(H), torch.arange(2 * H, 3 * H)])  # r, n untouched
        assert torch.equal(layer.bias_ih_l0[rest], p.bias_ih_l0[rest])
    assert not torch.equal(make(cell, hidden_dim=H, embedding_dim=8, chrono_t_max=t_max, num_layers=1).layers[0]
                           .bias_ih_l0, make(cell, hidden_dim=H, embedding_dim=8, chrono_t_max=400.0, num_layers=1)
                           .layers[0].bias_ih_l0)
    with pytest.raises(ValueError, match="chrono_t_max=50.0 .* needs cell='lstm' or 'gru'"):
        make("rnn_tanh", chrono_t_max=t_max)
    with pytest.raises(ValueError, match="no gate_bias"):
        make(cell, chrono_t_max=t_max, gate_bias=1.0)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm"])
def test_orthogonal_recurrent_init_is_orthogonal(cell):
    m = make(cell, init="orthogonal", hidden_dim=16, embedding_dim=8)
    for layer in m.layers:
        for g in range(4 if cell == "lstm" else 1):
            w = layer.weight_hh_l0[g * 16:(g + 1) * 16]
            torch.testing.assert_close(w @ w.T, torch.eye(16), atol=1e-5, rtol=0)
    w = make(cell, hidden_dim=16, embedding_dim=8).layers[0].weight_hh_l0[:16]  # the default is not
    assert (w @ w.T - torch.eye(16)).abs().max() > 0.1


@pytest.mark.parametrize("cell,output", [("lstm", "adaptive"), ("gru", "softmax"), ("rnn_tanh", "adaptive")])
def test_int8_copy_quantizes_what_has_a_kernel_and_stays_close(cell, output):
    from models.build import int8_copy

    # 32 wide: the adaptive softmax's second tail is hidden / 16 wide (a 12-wide model's is empty)
    m = make(cell, tie_weights=False, output=output, cutoffs=(10, 30) if output == "adaptive" else (),
             embedding_dim=32, hidden_dim=32)
    q = int8_copy(m)
    dynamic = torch.ao.nn.quantized.dynamic
    want = {"lstm": dynamic.LSTM, "gru": dynamic.GRU, "rnn_tanh": torch.nn.RNN}[cell]
    assert all(type(layer) is want for layer in q.layers)
    linears = [x for x in q.modules() if isinstance(x, (torch.nn.Linear, dynamic.Linear))]
    assert linears and all(isinstance(x, dynamic.Linear) for x in linears)
    assert all(type(layer) in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN) for layer in m.layers)  # the original is kept
    tokens = torch.randint(0, V, (3, 20))
    with torch.no_grad():
        lp, lq = m.log_probs(m(tokens)[0]), q.log_probs(q(tokens)[0])
    assert lq.exp().sum(-1) == pytest.approx(torch.ones(3, 20), abs=1e-4)
    # int8 weights move log-probabilities by a few hundredths, not more
    assert (lp - lq).abs().max() < 0.1
    assert (lp.argmax(-1) == lq.argmax(-1)).float().mean() > 0.8
