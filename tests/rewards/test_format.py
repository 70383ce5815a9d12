from rewards import FormatReward, HardFormatResultReward


def test_caption_format_multiline_and_whitespace():
    reward = FormatReward("caption")
    good = "<info>line one\nline two</info>\n\n<think>a\nb</think>  <answer>4</answer>"
    bad = ["<think>a</think><answer>4</answer>", "<info>x</info><think>a</think><answer>4</answer> extra", ""]
    assert reward([good] + bad).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_think_format():
    reward = FormatReward("think")
    assert reward(
        ["<think>a</think><answer>b</answer>", "<info>c</info><think>a</think><answer>b</answer>"]
    ).tolist() == [
        1.0,
        0.0,
    ]


def test_hard_format_result_needs_both():
    reward = HardFormatResultReward(template="think")
    completions = [
        "<think>2+2</think><answer>4</answer>",  # format ok, right -> 1
        "<think>2+2</think><answer>5</answer>",  # format ok, wrong -> 0
        "<answer>4</answer>",  # right but no think block -> 0
        "The answer is 4",  # fallback text would be right, but the hard reward reads <answer> only -> 0
    ]
    out = reward(completions, solution=["4"] * 4, problem_type=["numerical"] * 4)
    assert out.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert reward.metrics()["hard_format_result/bad_format"] == 2.0


def test_hard_format_result_threshold_for_continuous_types():
    # ANLS("hellp", "hello") = 0.8: not right at threshold 1.0, right at 0.75
    c = ["<think>read</think><answer>hellp</answer>"]
    assert HardFormatResultReward("think")(c, solution=["hello"], problem_type=["ocr"]).item() == 0.0
    assert (
        HardFormatResultReward("think", correct_threshold=0.75)(c, solution=["hello"], problem_type=["ocr"]).item()
        == 1.0
    )


def test_caption_format_where_visionary_r1_differs():
    # Visionary-R1's regex (fullmatch, DOTALL): one whitespace character between </info> and <think>, nothing around
    # the text, empty blocks and extra tags allowed. Ours: free whitespace, non-empty blocks, no repeated tags.
    reward = FormatReward("caption")
    completions = [
        "<info>a</info>\n\n<think>b</think><answer>c</answer>",  # two newlines: 0 there, 1 here
        "\n<info>a</info> <think>b</think> <answer>c</answer>\n",  # surrounding whitespace: 0 there, 1 here
        "<info>a</info> <think>b</think><answer>c</answer><answer>d</answer>",  # a second answer: 1 there, 0 here
        "<info></info> <think>b</think><answer>c</answer>",  # empty caption: 1 there, 0 here
        "<info>a\nb</info> <think>c\nd</think><answer>e</answer>",  # multi-line blocks: 1 in both
    ]
    assert reward(completions).tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
