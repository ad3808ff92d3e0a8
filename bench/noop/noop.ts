/**
 * The runtime's ceiling: a Worker that reads the request body and answers 202 without doing
 * anything, served the same way as the stack (behind a front worker, over a service binding).
 */
export default {
  async fetch(request) {
    await request.arrayBuffer();
    return Response.json({ accepted: 0 }, { status: 202 });
  },
} satisfies ExportedHandler;
