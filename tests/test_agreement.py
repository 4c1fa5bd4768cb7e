from polyfuse.fusion.agreement import normalize, similarity, vote


def test_normalize_strips_case_punctuation_and_filler():
    assert normalize("  The answer is: PARIS!! ") == "paris"
    assert normalize("Café.") == "cafe"


def test_short_answers_compare_normalised_and_numbers_by_value():
    assert similarity("Paris", "paris.") == 1.0
    assert similarity("Paris", "Paris, France") == 0.9
    assert similarity("42", "The answer is 42.0") == 1.0
    assert similarity("41", "42") == 0.0
    assert similarity("Paris", "Lyon") == 0.0


def test_long_answers_use_text_similarity():
    a = "The sky looks blue because air molecules scatter short blue wavelengths of sunlight more than red ones."
    b = "The sky is blue since molecules in the air scatter the short blue wavelengths of sunlight more than red."
    c = "Bananas are rich in potassium and are a convenient snack for athletes before long training sessions."
    assert similarity(a, b) > 0.5 > similarity(a, c)


def test_vote_picks_the_most_agreed_with_and_reports_mean_agreement():
    out = vote(["Lyon", "Paris", "paris", "Paris."])
    assert out.winner == 1
    assert out.support[1] == (0 + 1 + 1) / 3
    assert abs(out.agreement - 3 / 6) < 1e-9  # 3 agreeing pairs out of 6


def test_vote_single_candidate_agrees_with_itself():
    out = vote(["only"])
    assert (out.winner, out.agreement) == (0, 1.0)
