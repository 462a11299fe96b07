"""AppTest of the Compress page's latency workloads (compress/measure/metrics.py WORKLOADS): random ids, real text
in batch x seq windows, and the real sentences (their own shapes, a rate per second), on the tiny BERT."""
import compress as C


def test_real_text_in_windows_is_a_workload_of_its_own_shape(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    app.radio(key="live_workload").set_value("passages").run()
    assert not app.number_input(key="live_batch").disabled and not app.number_input(key="live_seq").disabled
    app.number_input(key="live_batch").set_value(2).run()
    app.number_input(key="live_seq").set_value(24).run()
    app.selectbox(key="r_quant").set_value("int8").run()
    app.button[0].click().run()
    assert not app.exception and not app.error
    said = [c.value for c in app.caption if c.value.startswith("Workload: ")]
    assert said and said[0].startswith(f"Workload: {C.WORKLOADS['passages']} (2x24)"), said


def test_real_sentence_workload_shows_sentences_per_second(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    app.radio(key="live_workload").set_value("sentences").run()
    assert app.number_input(key="live_batch").disabled
    app.selectbox(key="r_quant").set_value("int8").run()
    app.button[0].click().run()
    assert not app.exception and not app.error
    rates = [m for m in app.metric if m.label == "sentences/s"]
    assert len(rates) == 2 and float(rates[0].value.replace(",", "")) > 0 and "x" in rates[1].delta
    assert app.dataframe[-1].value["workload"][0] == "sentences" and "x sentences per s" in app.dataframe[-1].value  # (columns in words)
