"""The parity suite: one test per (adapter, case), parametrized by the bnparity plugin."""


def test_parity(bn_cell):
    bn_cell.check()
