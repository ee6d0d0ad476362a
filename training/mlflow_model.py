"""MLflow pyfunc model (models-from-code): texts -> text embeddings, image bytes -> image embeddings.

    model = mlflow.pyfunc.load_model("models:/openwit-sample/1")
    model.predict(pd.DataFrame({"text": ["a red circle"]}))
"""

import io

import mlflow
import numpy as np
import torch


class CLIPPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from training.checkpoint import load_model

        self.model, self.tok, self.pre = load_model(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        from PIL import Image

        from training.data.images import eval_tensor

        with torch.no_grad():
            if "text" in model_input.columns:
                return self.model.encode_text(self.tok(list(model_input["text"])), normalize=True).numpy()
            x = np.stack([eval_tensor(Image.open(io.BytesIO(b)), self.pre.image_size) for b in model_input["image"]])
            return self.model.encode_image(torch.from_numpy(x), normalize=True).numpy()


mlflow.models.set_model(CLIPPyfunc())
