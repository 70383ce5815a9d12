# The demo GRPO config samples with vLLM; e2e tests that are not about the engine use the HF one (no engine start).
HF_ENGINE = '--model.init_args.engine={"class_path": "rollout.hf.HFEngine"}'
