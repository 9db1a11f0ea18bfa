def test_fixtures_build(prepared, trained_checkpoint):
    assert prepared.manifest["splits"]["train"]["documents"] > 300
    assert trained_checkpoint.exists()
